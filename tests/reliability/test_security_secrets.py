"""Security: canary secrets. A unique random value in every ``QUANTLAB_*`` secret variable
(`quantlab.config.Secrets`), then real runs, and everything they produced scanned for them:

* ``quantlab run`` of the production notebook (a short backtest);
* ``quantlab run`` of a notebook that reads a key from its environment, prints it, logs it
  with a traceback and raises an exception holding it (the kernel has the secrets: that is
  how a notebook gets its keys);
* ``quantlab live`` with an Alpaca venue whose server refuses the keys (HTTP 401: an
  authentication failure, retried and reported), writing the lake, the order book and the
  monitor snapshot;
* the CLI's logging setup given an exception whose message, cause and traceback hold
  secrets, and a log call whose ``stack_info`` shows a line holding one.

Scanned: stdout and stderr of every process, every file under the three working folders
(logs, executed notebooks with their cells, outputs and metadata, HTML reports, summaries,
signal logs, breaker and monitor state), every row of every table of every SQLite file (the
order book, the run registry, Chroma's), every row and the key-value metadata of every
Parquet file, and every record of the Chroma pattern memory. Each canary is looked for as
is, URL-encoded and base64-encoded (both alphabets, every alignment).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import json
import logging
import os
import secrets as pysecrets
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import polars as pl
import pytest

from quantlab.config import Secrets, load_settings
from quantlab.testing.fakes.alpaca_trading import FakeAlpacaTrading
from quantlab.testing.notebooks import write_notebook
from quantlab.testing.reliability import record

DATA = "bundled:binance_btc_pairs_5m_2018-01.parquet"
QUANTLAB = [sys.executable, "-m", "quantlab.cli"]

LIVE_TOML = """\
[strategy]
name = "ema_cross"
id = "ema"
[features]
fast = 3
slow = 8
[[live.sources]]
type = "synthetic"
symbols = 3
rate = 2000
bar_interval_s = 0.05
[execution]
sizing = "fixed"
order_notional = "1000"
routes = {{"SYN1/USD" = "alpaca"}}
[[execution.venues]]
type = "paper"
[[execution.venues]]
type = "alpaca"
url = "{url}"
poll_interval_s = 0.05
[risk]
max_position_notional = "100000"
max_order_notional = "100000"
"""


def canaries() -> dict[str, str]:
    """One fresh value per secret variable; the '+' makes URL-encoding change it."""
    return {
        f"QUANTLAB_{name.upper()}": f"cnry{pysecrets.token_hex(8)}+{pysecrets.token_hex(4)}"
        for name in Secrets.model_fields
    }


# -- the scanner ----------------------------------------------------------------------------
class Scanner:
    """Looks for every canary, in every encoding, in texts, files, rows and records."""

    def __init__(self, values: dict[str, str]) -> None:
        self.forms: list[tuple[str, bytes]] = []
        for name, value in values.items():
            raw = value.encode()
            found = {raw, quote(value, safe="").encode(), quote_plus(value).encode()}
            for pad in range(3):  # the canary at each offset of a base64 group
                for encode in (base64.b64encode, base64.urlsafe_b64encode):
                    text = encode(b"\0" * pad + raw)
                    skip = (pad * 4 + 2) // 3  # characters that also encode the padding
                    keep = (len(raw) + pad) // 3 * 4 - skip  # whole groups only
                    found.add(text[skip : skip + keep])
            self.forms += [(name, f) for f in found if len(f) >= 8]
        self.found: dict[tuple[str, str], list[str]] = {}  # (place, canary) -> how seen
        self.files = self.rows = self.records = self.texts = 0

    @property
    def hits(self) -> list[str]:
        """One line per canary found in a place (a file, a stream, a Chroma folder)."""
        return [f"{place}: {name} ({', '.join(how)})" for (place, name), how in self.found.items()]

    def check(self, place: str, data: bytes | str, how: str = "raw") -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        for name, form in self.forms:
            if form in data:
                self.found.setdefault((place, name), []).append(how)

    def text(self, where: str, text: str) -> None:
        self.texts += 1
        self.check(where, text)
        self.check(where, unquote(html.unescape(text)), "unescaped")

    def tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.file(path)
        for chroma in sorted({p.parent for p in root.rglob("chroma.sqlite3")}):
            self.chroma(chroma)

    def file(self, path: Path) -> None:
        self.files += 1
        data = path.read_bytes()
        self.check(str(path), data)
        suffix = path.suffix
        if suffix in (".ipynb", ".json"):
            try:
                doc = json.loads(data)
            except ValueError:
                return
            for i, s in enumerate(_strings(doc)):
                self.check(str(path), s, f"json string {i}")
        elif suffix in (".html", ".log", ".txt"):
            text = unquote(html.unescape(data.decode(errors="replace")))
            self.check(str(path), text, "unescaped")
        elif data[:16] == b"SQLite format 3\0":
            self.sqlite(path)
        elif suffix == ".parquet":
            self.parquet(path)

    def sqlite(self, path: Path) -> None:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for tbl in tables:
                quoted = '"' + tbl.replace('"', '""') + '"'
                for row in db.execute(f"SELECT * FROM {quoted}"):  # noqa: S608 (names from sqlite_master)
                    self.rows += 1
                    for value in row:
                        if isinstance(value, str | bytes):
                            self.check(str(path), value, f"table {tbl}")
        finally:
            db.close()

    def parquet(self, path: Path) -> None:
        for key, value in pl.read_parquet_metadata(path).items():
            self.check(str(path), f"{key}={value}", f"metadata {key}")
        frame = pl.read_parquet(path)
        self.rows += frame.height
        for column in frame.columns:
            if not frame[column].dtype.is_numeric() and not frame[column].dtype.is_temporal():
                for value in frame[column].to_list():
                    self.check(str(path), str(value), f"column {column}")

    def chroma(self, path: Path) -> None:
        from quantlab.storage.vectors import make_client

        client = make_client(path=path)
        for collection in client.list_collections():
            got = collection.get(include=["documents", "metadatas"])
            self.records += len(got["ids"])
            how = f"collection {collection.name}"
            self.check(str(path), collection.name, how)
            for item in (got["ids"], got["documents"] or [], got["metadatas"] or []):
                self.check(str(path), json.dumps(item, default=str), how)


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


# -- the runs -------------------------------------------------------------------------------
def _start(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [*QUANTLAB, *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _finish(procs: Iterable[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        out.append((proc.returncode, stdout, stderr))
    return out


def _log_through_the_cli_setup(tmp: Path, values: dict[str, str]) -> None:
    """Exceptions and a stack holding secrets, logged through `quantlab.cli._setup_logging`
    (the stderr handler of run, live, schedule, sweep and dashboard)."""
    from quantlab.cli import _setup_logging

    key, secret = values["QUANTLAB_ALPACA_API_KEY"], values["QUANTLAB_ALPACA_API_SECRET"]
    redis = values["QUANTLAB_REDIS_PASSWORD"]
    tmp.mkdir(parents=True, exist_ok=True)
    module = tmp / "canary_caller.py"
    module.write_text(
        textwrap.dedent(f"""\
        def call(log):
            log.warning("about to call the venue", stack_info=True)  # key {key}
        """)
    )
    spec = importlib.util.spec_from_file_location("canary_caller", module)
    assert spec is not None
    assert spec.loader is not None
    caller = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(caller)

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    _setup_logging(load_settings())
    log = logging.getLogger("quantlab.canary")
    try:
        try:
            try:
                raise ConnectionError(f"redis AUTH {redis} refused")
            except ConnectionError as cause:
                raise PermissionError(f"HTTP 401 for key {key} / secret {secret}") from cause
        except PermissionError:
            log.exception("login with %s failed", key)
        log.error("retrying with %s", secret, exc_info=True)  # no exception: exc_info (None...)
        caller.call(log)
    finally:
        root.handlers[:], root.level = saved


def test_canary_secrets_reach_no_output_file_row_record_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts every canary found anywhere (leaked).

    The check can fail: the scanner's own control below plants the canaries in each kind of
    place it reads (a Parquet column that Snappy compresses, Parquet metadata, a SQLite row,
    JSON escapes, base64 and URL encodings, a Chroma record) and must find every one; the
    leaky notebook prints the key and raises with it, so the executed notebook holds it
    unless the executor masks it; and before `SecretMaskingFilter` masked tracebacks the
    logged exceptions printed the keys to stderr."""
    values = canaries()
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTLAB_")}
    env.update(values)
    backtest, leaky, live = tmp_path / "backtest", tmp_path / "leaky", tmp_path / "live"
    leaky.mkdir()
    write_notebook(
        leaky / "leaky.ipynb",
        "run_id = None\nrun_dir = None",
        "import logging, os\nkey = os.environ['QUANTLAB_ALPACA_API_KEY']\n"
        "print('the key is', key)\nlogging.basicConfig()\n"
        "try:\n    raise ValueError('bad key ' + key)\n"
        "except ValueError:\n    logging.getLogger('nb').exception('login failed')\nkey",
        "raise RuntimeError('failed with ' + key)",
    )
    with FakeAlpacaTrading(key="the-right-key", secret="the-right-secret") as fake:  # noqa: S106
        live.mkdir()
        (live / "live.toml").write_text(LIVE_TOML.format(url=fake.url))
        live_env = {**env, "QUANTLAB_STORAGE__STATE_DIR": str(live / "state")}
        procs = [
            _start(backtest, env, "run", "-d", DATA, "-s", "ETH/BTC", "--start", "2018-01-25",
                   "-q"),
            _start(leaky, env, "run", "--notebook", "leaky.ipynb", "--run-id", "leaky", "-q"),
            _start(live, live_env, "live", "-c", "live.toml", "--duration", "2", "-q"),
        ]  # fmt: skip
        results = _finish(procs)
        refused = len(fake.requests)
    _log_through_the_cli_setup(tmp_path / "logging", values)
    captured = capsys.readouterr()

    scan = Scanner(values)
    for (_code, stdout, stderr), what in zip(results, ("backtest", "leaky", "live"), strict=True):
        scan.text(f"{what} stdout", stdout)
        scan.text(f"{what} stderr", stderr)
    scan.text("cli logging stderr", captured.err)
    scan.text("cli logging stdout", captured.out)
    for root in (backtest, leaky, live):
        scan.tree(root)

    control = _control(tmp_path / "control", values)
    record(
        "security",
        "canary secrets in every output (runs, notebooks, reports, logs, SQL, Parquet, Chroma)",
        trials=scan.files + scan.rows + scan.records + scan.texts,
        unit="files, rows, records and streams",
        leaked=len(scan.found),
        detail=(
            f"{len(values)} canaries; {scan.files} files, {scan.rows} SQL/Parquet rows, "
            f"{scan.records} Chroma records, {scan.texts} stdout/stderr/log streams; after an "
            f"HTTP 401 ({refused} refused requests), notebook and logged exceptions; the "
            f"scanner found {control[0]}/{control[1]} planted canaries"
        ),
    )
    assert control[0] == control[1], control
    assert scan.hits == [], scan.hits
    # The runs did what the scan relies on.
    assert results[0][0] == 0, results[0][2][-2000:]
    assert results[1][0] == 1, results[1][2][-2000:]  # the leaky notebook raises, on purpose
    assert results[2][0] == 0, results[2][2][-2000:]
    assert "401" in results[2][2], results[2][2][-2000:]
    assert refused > 0
    assert "login with *** failed" in captured.err
    assert "about to call the venue" in captured.err
    assert "PermissionError" in captured.err  # the traceback is there, masked
    assert list(live.rglob("*.parquet")), "the live run wrote no lake files to scan"
    assert list(backtest.rglob("chroma.sqlite3")), "the backtest kept no pattern memory"
    assert scan.records > 0


def _control(root: Path, values: dict[str, str]) -> tuple[int, int]:
    """Plant the canaries where the scanner must find them; (found, planted)."""
    from quantlab.storage.vectors import make_client

    root.mkdir()
    vals = list(values.values())
    texts = {
        "b64.txt": "token=" + base64.b64encode(b"xy" + vals[0].encode()).decode(),
        "b64url.txt": base64.urlsafe_b64encode(b"z" + vals[1].encode()).decode(),
        "url.txt": "https://host/?k=" + quote(vals[2], safe=""),
        "escaped.json": '{"k": "\\u0063' + vals[3][1:] + '"}',  # c as a JSON escape
        "page.html": "<p>" + html.escape(vals[4]).replace("c", "&#99;") + "</p>",
    }
    for name, text in texts.items():
        (root / name).write_text(text)
    # A column of the value, dictionary-encoded and compressed: only reading it finds it.
    frame = pl.DataFrame({"note": [vals[5] * 3] * 2000})
    frame.write_parquet(root / "column.parquet", compression="zstd")
    pl.DataFrame({"x": [1]}).write_parquet(root / "meta.parquet", metadata={"k": vals[6]})
    db = sqlite3.connect(root / "rows.db")
    db.execute("CREATE TABLE t (v BLOB)")
    db.execute("INSERT INTO t VALUES (?)", (base64.b64encode(vals[7].encode()),))
    db.commit()
    db.close()
    collection = make_client(path=root / "chroma").get_or_create_collection(
        "canary", embedding_function=None
    )
    collection.add(ids=["a"], embeddings=[[0.1, 0.2, 0.3]], metadatas=[{"note": vals[8]}])
    planted = [*texts, "column.parquet", "meta.parquet", "rows.db", "chroma"]
    scan = Scanner(values)
    scan.tree(root)
    places = [place for place, _name in scan.found]
    found = sum(any(place.startswith(str(root / p)) for place in places) for p in planted)
    return found, len(planted)
