"""`quantlab risk status | kill | reset` and the live-money guard of `quantlab live`, as a user
runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

QUANTLAB = [sys.executable, "-m", "quantlab.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*QUANTLAB, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_kill_switch_status_and_reset(tmp_path: Path) -> None:
    state = tmp_path / "breaker.json"
    done = run("risk", "status", "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert "breaker active (no state recorded yet" in done.stdout
    done = run("risk", "kill", "--reason", "fat finger on desk 3", "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert "breaker halted" in done.stdout
    assert "kill_switch: fat finger on desk 3" in done.stdout
    record = json.loads(state.read_text())
    assert record["state"] == "halted"
    done = run("risk", "reset", "--reason", "checked with the desk", "--state", str(state))
    assert done.returncode == 0, done.stderr
    assert "breaker active" in done.stdout
    assert json.loads(state.read_text())["state"] == "active"


def test_the_default_state_file_follows_the_trading_mode() -> None:
    state_dir = Path(os.environ["QUANTLAB_STORAGE__STATE_DIR"])
    done = run("risk", "kill", "--reason", "drill", "--trading", "live")
    assert done.returncode == 0, done.stderr
    assert (state_dir / "live" / "breaker.json").exists()
    assert not (state_dir / "paper" / "breaker.json").exists()


def test_live_trading_refuses_the_paper_venue(tmp_path: Path) -> None:
    done = run("live", "--live-trading", "--duration", "1", "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "the paper venue cannot take part in a live-money run" in done.stderr
