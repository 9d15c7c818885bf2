"""kill -9 during Parquet writes: corrupt or partial files 0.

Two cases, each 20 writer processes killed at seeded random moments:

* **rewrites**: a writer rewrites one 2 MiB target in a loop (`atomic_write_parquet`); after
  each kill the target is either absent (killed before the first rename) or exactly one
  complete version of the frame, never part of one;
* **append and compact**: writers append their own chunks of real bars to the lake and
  compact after each (`Lake.append`, `Lake.compact`), killed anywhere in either; after each
  kill every file a reader sees opens and holds only rows that were written, no row twice,
  and every append a writer acknowledged is there.

A file a reader sees that cannot be read in full, or that holds anything else, is corrupt or
partial. Killed writers leave their temporary files (``.tmp-<host>-<pid>-...``; readers never
see them); `Lake.sweep_temporaries` must remove every one of them, and what it leaves behind
counts as partial too.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quantlab.adapters.sim.data import bundled_dir
from quantlab.storage.lake import Lake
from quantlab.testing.reliability import record

pytestmark = pytest.mark.slow

KILLS = 20
BARS_FILE = bundled_dir() / "binance_btc_pairs_5m_2018-01.parquet"

_WRITER = """
import sys
from pathlib import Path
import numpy as np
import polars as pl
from quantlab.storage.lake import atomic_write_parquet

target, rows = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(7)
frame = pl.DataFrame({"a": rng.random(rows), "b": rng.integers(0, 1 << 62, rows)})
print("ready", flush=True)
sys.stdin.readline()
while True:
    atomic_write_parquet(frame, target)
    print("w", flush=True)
"""
_ROWS = 131_072  # 2 MiB of incompressible data per write

_CHUNK = 6
_APPENDER = """
import sys
import time
from pathlib import Path

import polars as pl

from quantlab.storage.lake import Lake

root, source, k, procs, chunk = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
frame = pl.read_parquet(source)
frame = frame.filter(
    pl.col("symbol").is_in(["ETH/BTC", "ADA/BTC", "LTC/BTC"]),
    pl.col("timestamp") < pl.datetime(2018, 1, 13, time_zone="UTC"),
).sort("timestamp", "symbol")
lake = Lake(Path(root))
print("ready", flush=True)
sys.stdin.readline()
for c in range(k, -(-frame.height // chunk), procs):  # this process's chunks only
    lake.append(frame.slice(c * chunk, chunk), "bar")
    print(f"a {c}", flush=True)
    lake.compact()
    print(f"c {c}", flush=True)
print("done", flush=True)
time.sleep(60)
"""


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*") if p.is_file()]


def _spawner(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _start(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def _kill(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return out


def test_kill_during_rewrites_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "bar" / "2018-01-10" / "ETH%2FBTC.parquet"
    rng_frame = np.random.default_rng(7)
    expected = pl.DataFrame(
        {"a": rng_frame.random(_ROWS), "b": rng_frame.integers(0, 1 << 62, _ROWS)}
    )
    rng = random.Random(20180110)
    lookahead = 3  # writers start (import polars, build the frame) ahead of their turn
    waiting = deque(_spawner(_WRITER, str(target), str(_ROWS)) for _ in range(lookahead))
    started, complete, partial, lost = lookahead, 0, 0, 0
    try:
        for k in range(KILLS):
            proc = waiting.popleft()
            if started < KILLS:
                waiting.append(_spawner(_WRITER, str(target), str(_ROWS)))
                started += 1
            _start(proc)
            acknowledged = False
            if k % 2:  # half the kills come after a first complete write: the target exists
                assert proc.stdout is not None
                acknowledged = proc.stdout.readline() == b"w\n"
            time.sleep(rng.uniform(0.0, 0.06))
            _kill(proc)
            lost += acknowledged and not target.exists()
            if target.exists():
                try:
                    ok = pl.read_parquet(target).equals(expected)
                except Exception:
                    ok = False
                complete += ok
                partial += not ok
    finally:
        for proc in waiting:
            proc.kill()
            proc.communicate()
    swept = Lake(tmp_path).sweep_temporaries()
    after_sweep = len(_tmp_files(tmp_path))
    record(
        "faults",
        "kill -9 during Parquet writes: rewrites of one 2 MiB file",
        trials=KILLS,
        unit="kills",
        lost=lost,
        failed=partial + after_sweep,
        failed_what="corrupt or partial files",
        detail=(
            f"complete file after {complete} kills, none yet after {KILLS - complete - partial}; "
            f"{swept} temporary files of killed writers swept"
        ),
    )
    assert partial == 0, f"{partial} kills left a corrupt or partial file"
    assert lost == 0, f"{lost} acknowledged writes missing"
    assert after_sweep == 0, f"temporary files left after the sweep: {_tmp_files(tmp_path)}"
    assert complete > 0
    assert Lake(tmp_path).files("bar") == [target]


def test_kill_during_append_and_compact_leaves_no_partial_file_and_no_duplicate(
    tmp_path: Path,
) -> None:
    root = tmp_path / "lake"
    frame = (
        pl.read_parquet(BARS_FILE)
        .filter(
            pl.col("symbol").is_in(["ETH/BTC", "ADA/BTC", "LTC/BTC"]),
            pl.col("timestamp") < dt.datetime(2018, 1, 13, tzinfo=dt.UTC),
        )
        .sort("timestamp", "symbol")
    )
    lake = Lake(root)
    rng = random.Random(20180110)

    def spawn(k: int) -> subprocess.Popen[bytes]:
        return _spawner(_APPENDER, str(root), str(BARS_FILE), str(k), str(KILLS), str(_CHUNK))

    lookahead = 3
    waiting = deque(spawn(k) for k in range(lookahead))
    started = lookahead
    acknowledged: set[int] = set()
    corrupt = duplicated = invented = lost = files_checked = 0
    try:
        for _ in range(KILLS):
            proc = waiting.popleft()
            if started < KILLS:
                waiting.append(spawn(started))
                started += 1
            _start(proc)
            time.sleep(rng.uniform(0.0, 0.35))
            lines = _kill(proc).split()
            acknowledged |= {
                int(c) for tag, c in zip(lines[::2], lines[1::2], strict=False) if tag == "a"
            }
            files = lake.files("bar")
            readable = []
            for f in files:  # every file a reader sees must open in full
                files_checked += 1
                try:
                    readable.append(pl.read_parquet(f))
                except Exception:
                    corrupt += 1
            if not files or len(readable) < len(files):
                continue
            got = lake.scan("bar").collect()
            duplicated += int(got.select("symbol", "timestamp").is_duplicated().sum()) // 2
            invented += got.join(frame, on=frame.columns, how="anti", nulls_equal=True).height
            want = pl.concat([frame.slice(c * _CHUNK, _CHUNK) for c in acknowledged])
            lost += want.join(got, on=frame.columns, how="anti", nulls_equal=True).height
    finally:
        for proc in waiting:
            proc.kill()
            proc.communicate()
    swept = lake.sweep_temporaries()
    after_sweep = len(_tmp_files(root))
    lake.compact()  # a last compaction leaves only main files, holding every row once
    final = lake.scan("bar").collect()
    duplicated += int(final.select("symbol", "timestamp").is_duplicated().sum()) // 2
    record(
        "faults",
        "kill -9 during Parquet appends and compactions (the lake)",
        trials=KILLS,
        unit="kills",
        lost=lost,
        duplicated=duplicated,
        failed=corrupt + invented + after_sweep,
        failed_what="corrupt or partial files, or rows never written",
        detail=(
            f"{len(acknowledged)} acknowledged appends, {files_checked} file reads checked, "
            f"{final.height} rows in the end; {swept} temporary files of killed writers swept"
        ),
    )
    assert acknowledged, "no writer got as far as one append"
    assert corrupt == 0, f"{corrupt} files a reader sees could not be read"
    assert duplicated == 0, f"{duplicated} rows twice"
    assert invented == 0, f"{invented} rows never written"
    assert lost == 0, f"{lost} acknowledged rows missing"
    assert after_sweep == 0, f"temporary files left after the sweep: {_tmp_files(root)}"
    assert not list(root.rglob(".parts/*/part-*.parquet"))
