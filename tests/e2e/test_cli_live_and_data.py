"""`quantlab live` (with a duration and stopped by SIGTERM) and `quantlab data import / ls`, run
as a user runs them: a subprocess, the lake in a temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from quantlab.adapters.sim.data import bundled_dir
from quantlab.storage.lake import Lake

QUANTLAB = [sys.executable, "-m", "quantlab.cli"]
TRADES = bundled_dir() / "binance_btcusdt_trades_2021-01-08.parquet"
FX_QUOTES = bundled_dir() / "fxcm_gbpusd_1m_quotes_2012-02.parquet"
PERP_BARS = bundled_dir() / "btc_perp_1m_2022-01.parquet"
FX_CROSSED = 347  # GBP/USD minutes whose recorded bid is above the ask


def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "QUANTLAB_STORAGE__LAKE_ROOT": str(tmp_path / "lake"),
        "QUANTLAB_STORAGE__LAKE_COLD_ROOT": str(tmp_path / "cold"),
        "COLUMNS": "200",  # rich tables are not cut to 80 columns
    }


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANTLAB, *args],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the rich tables in `text`."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


def part_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".parts" in p.parts]


def check_live_lake(root: Path, summary: dict[str, object]) -> None:
    lake = Lake(root)
    assert {"bar", "quote", "trade"} <= set(lake.datasets())
    rows = {ds: lake.scan(ds).collect() for ds in ("bar", "quote", "trade")}
    assert all(frame.height > 0 for frame in rows.values())
    for ds, frame in rows.items():
        assert frame["symbol"].str.starts_with("SYN").all(), ds
        assert frame.select("symbol", "timestamp").is_duplicated().sum() == 0, ds
    # Everything accepted was stored, once.
    assert sum(f.height for f in rows.values()) == summary["events_accepted"]
    assert part_files(root) == []  # compacted on the way out


# -- live ------------------------------------------------------------------------------------


def test_live_for_a_duration_prints_a_summary_and_fills_the_lake(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    done = run(tmp_path, "live", "--duration", "3", "--run-dir", str(run_dir), "--quiet")
    elapsed = time.monotonic() - t0
    assert done.returncode == 0, done.stderr
    assert elapsed < 30
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "live"
    assert summary["events"] > 0
    assert summary["events_accepted"] > 0
    assert summary["data"] == ["synthetic"]
    assert set(summary["sources"]) == {"synthetic"}
    source = summary["sources"]["synthetic"]
    assert source["events"] > 0
    assert source["reconnects"] == 0
    assert 2.5 <= summary["wall_s"] < 20
    for words in ("quantlab run", "mode", "live", "events processed", "source synthetic"):
        assert words in done.stdout
    assert f"{summary['events']:,}" in done.stdout
    assert str(run_dir / "summary.json") in done.stdout
    assert "Traceback" not in done.stderr
    check_live_lake(tmp_path / "lake", summary)
    assert not (tmp_path / "cold").exists() or not any((tmp_path / "cold").rglob("*.parquet"))


def test_a_role_needs_the_redis_bus_and_a_known_name(tmp_path: Path) -> None:
    done = run(tmp_path, "live", "--role", "strategy", "--duration", "1", "-q")
    assert done.returncode == 2
    assert "bus.backend = 'redis'" in done.stderr
    done = run(tmp_path, "live", "--role", "risk", "--duration", "1", "-q")
    assert done.returncode == 2
    assert "unknown role 'risk'" in done.stderr


def test_live_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [*QUANTLAB, "live", "--run-dir", str(run_dir)],
            stdout=stdout,
            stderr=stderr,
            env=cli_env(tmp_path),
            cwd=tmp_path,
        )
        try:
            # Running once the first status line is out (signal handlers are installed).
            deadline = time.monotonic() + 30
            while "live events" not in err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "no status line within 30 s"
                time.sleep(0.1)
            time.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            code = proc.wait(timeout=30)
            stopped_in = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, err.read_text()
    assert stopped_in < 30
    assert "Traceback" not in err.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "live"
    assert summary["events"] > 0
    assert "synthetic" in summary["sources"]
    assert "events processed" in out.read_text()
    check_live_lake(tmp_path / "lake", summary)
    # No `.parts` folder still holds a file.
    assert not [
        d for d in (tmp_path / "lake").rglob(".parts") if any(p.is_file() for p in d.rglob("*"))
    ]


# -- data import / ls ------------------------------------------------------------------------


@pytest.fixture
def ccxt_json(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    """A ccxt OHLCV list made from 90 real 1-minute BTC perp bars."""
    bars = pl.read_parquet(PERP_BARS).sort("timestamp").head(90)
    rows = [
        [int(ts.timestamp() * 1000), o, h, lo, c, v]
        for ts, o, h, lo, c, v in bars.select(
            "timestamp", "open", "high", "low", "close", "volume"
        ).rows()
    ]
    path = tmp_path / "btc_usdt_1m.json"
    path.write_text(json.dumps(rows))
    return path, bars


def test_data_import_and_ls(tmp_path: Path, ccxt_json: tuple[Path, pl.DataFrame]) -> None:
    json_path, bars = ccxt_json
    root = tmp_path / "imported"
    done = run(
        tmp_path,
        "data",
        "import",
        str(TRADES),
        str(FX_QUOTES),
        str(json_path),
        "--symbol",
        "BTC/USDT",
        "--lake-root",
        str(root),
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"imported into {root}" in done.stdout
    imported = {row[0]: row[1:] for row in table_rows(done.stdout)}
    assert set(imported) == {TRADES.name, FX_QUOTES.name, json_path.name}
    # file -> dataset, symbols, rows, written, rejected, flagged
    assert imported[TRADES.name][:5] == ["trade", "BTC/USDT", "2,001", "2,001", "0"]
    fx_written = 30_117 - FX_CROSSED
    assert imported[FX_QUOTES.name][:5] == [
        "quote",
        "GBP/USD",
        "30,117",
        f"{fx_written:,}",
        f"crossed_quote {FX_CROSSED}",
    ]
    assert imported[json_path.name][:5] == ["bar", "BTC/USDT", "90", "90", "0"]

    lake = Lake(root)
    inv = {(d, s): n for d, s, _, _, n in lake.inventory().rows()}
    assert inv == {
        ("bar", "BTC/USDT"): 90,
        ("quote", "GBP/USD"): fx_written,
        ("trade", "BTC/USDT"): 2_001,
    }
    stored = lake.scan("bar").collect().drop("flags", strict=False)
    assert stored["close"].to_list() == bars["close"].to_list()
    quotes = lake.scan("quote").collect()
    assert (quotes["bid"] <= quotes["ask"]).all()
    rejected = pl.read_parquet(root / "_rejected" / "import.parquet")
    assert rejected.height == FX_CROSSED
    assert part_files(root) == []

    listed = run(tmp_path, "data", "ls", "--lake-root", str(root))
    assert listed.returncode == 0, listed.stderr
    assert f"lake {root}" in listed.stdout
    rows = table_rows(listed.stdout)
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("bar", "BTC/USDT", "90"),
        ("quote", "GBP/USD", f"{fx_written:,}"),
        ("trade", "BTC/USDT", "2,001"),
    ]
    assert rows[1][2:4] == ["2012-02-01 00:00:00", "2012-03-01 00:00:00"]
    assert rows[2][2].startswith("2021-01-08 00:00:00")


def test_data_ls_of_an_empty_lake(tmp_path: Path) -> None:
    done = run(tmp_path, "data", "ls", "--lake-root", str(tmp_path / "nothing"))
    assert done.returncode == 0, done.stderr
    assert "is empty" in done.stdout
    assert "quantlab data import" in done.stdout


def test_importing_a_file_that_is_not_market_data_fails_clearly(tmp_path: Path) -> None:
    other = tmp_path / "inventory.parquet"
    pl.DataFrame({"sku": ["a", "b"], "count": [3, 4]}).write_parquet(other)
    done = run(tmp_path, "data", "import", str(other), "--lake-root", str(tmp_path / "lake"))
    assert done.returncode == 2
    assert "cannot tell bars, trades or quotes from columns ['sku', 'count']" in " ".join(
        done.stderr.split()
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "lake").exists() or Lake(tmp_path / "lake").inventory().is_empty()


def test_importing_a_ccxt_list_without_a_symbol_or_a_missing_file_fails_clearly(
    tmp_path: Path, ccxt_json: tuple[Path, pl.DataFrame]
) -> None:
    json_path, _ = ccxt_json
    done = run(tmp_path, "data", "import", str(json_path), "--lake-root", str(tmp_path / "l"))
    assert done.returncode == 2
    assert "needs a symbol (--symbol)" in done.stderr
    assert "Traceback" not in done.stderr
    missing = run(tmp_path, "data", "import", "nope.parquet", "--lake-root", str(tmp_path / "l"))
    assert missing.returncode == 2
    assert "'nope.parquet' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_importing_a_corrupt_parquet_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "trades.parquet"
    bad.write_bytes(b"this is not parquet at all")
    done = run(tmp_path, "data", "import", str(bad), "--lake-root", str(tmp_path / "lake"))
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert "trades.parquet" in done.stderr


def test_error_messages_with_brackets_are_printed_intact(tmp_path: Path) -> None:
    bad = tmp_path / "ohlcv.json"
    bad.write_text(json.dumps({"BTC/USDT": [1, 2, 3]}))
    done = run(tmp_path, "data", "import", str(bad), "--lake-root", str(tmp_path / "lake"))
    assert done.returncode == 2
    assert "must be [ms, o, h, l, c, v] lists" in " ".join(done.stderr.split())
