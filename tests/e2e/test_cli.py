"""The `quantlab` command as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import quantlab

QUANTLAB = [sys.executable, "-m", "quantlab.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QUANTLAB, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"quantlab {quantlab.__version__}"


def test_run_prints_and_writes_summary(tmp_path: Path) -> None:
    done = run(
        "run",
        "--symbols",
        "ETH/BTC,LTC/BTC",
        "--run-dir",
        str(tmp_path / "r"),
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["symbols"] == 2
    assert summary["orders"] > 0
    assert summary["fills"] > 0
    for words in ("events processed", "orders", "fills", "PnL (BTC)", "wall time", "events/s"):
        assert words in done.stdout
    assert f"{summary['fills']:,}" in done.stdout


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    canary = "CANARY-AK-9f8e7d6c5b4a"
    done = run("config", "show", env={"QUANTLAB_ALPACA_API_KEY": canary}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["secrets"]["alpaca_api_key"] == "**********"
    assert canary not in done.stdout + done.stderr


def test_an_error_that_quotes_a_secret_is_printed_masked(tmp_path: Path) -> None:
    canary = "CANARY-PW-0a1b2c3d4e5f"
    missing = tmp_path / f"{canary}.toml"  # the error names the file, and so the secret
    done = run("config", "show", "-c", str(missing), env={"QUANTLAB_REDIS_PASSWORD": canary})
    assert done.returncode == 2
    assert "error" in done.stderr
    assert "***" in done.stderr
    assert canary not in done.stdout + done.stderr


def test_bad_config_fails_with_the_key(tmp_path: Path) -> None:
    (tmp_path / "quantlab.toml").write_text("[ingest]\nbatch_size = -1\n")
    done = run("run", "--quiet", cwd=tmp_path)
    assert done.returncode == 2
    assert "ingest.batch_size" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_in_paper_mode_takes_the_configured_sources(tmp_path: Path) -> None:
    (tmp_path / "quantlab.toml").write_text(
        '[[live.sources]]\ntype = "synthetic"\nname = "syn-a"\nsymbols = 3\nrate = 2000\n'
        f'[storage]\nlake_root = "{tmp_path / "lake"}"\nlake_cold_root = "{tmp_path / "cold"}"\n'
    )
    done = run(
        "run",
        "--mode",
        "paper",
        "--duration",
        "2",
        "--quiet",
        "--run-dir",
        str(tmp_path / "r"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["mode"] == "live"
    assert summary["events"] > 1000
    assert list(summary["sources"]) == ["syn-a"]
    assert "source syn-a" in done.stdout
