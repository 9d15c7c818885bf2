"""`quantlab model train` and `quantlab model ls` as a user runs them (tiny settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parents[4] / "src" / "quantlab" / "_data" / "market"


def quantlab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantlab.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
        check=False,
    )


def test_model_train_then_ls(tmp_path: Path) -> None:
    bars = tmp_path / "bars.parquet"
    pl.read_parquet(DATA / "btc_perp_1m_2022-01.parquet").head(2_500).write_parquet(bars)
    registry = tmp_path / "models"
    done = quantlab(
        "model", "train", "--data", str(bars), "--registry", str(registry), "--name", "tiny",
        "--window", "16", "--horizon", "4", "--hidden", "8", "--epochs", "1", "--splits", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "model tiny-v1" in done.stdout
    assert "onnx parity" in done.stdout
    doc = json.loads((registry / "registry.json").read_text())
    (entry,) = doc["models"]
    assert (entry["name"], entry["window"], entry["horizon"]) == ("tiny", 16, 4)
    assert entry["training"]["files"] == ["bars.parquet"]
    assert (registry / "tiny-v1.onnx").is_file()

    listed = quantlab("model", "ls", "--registry", str(registry), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-v1" in listed.stdout
    assert "16/4" in listed.stdout

    empty = quantlab("model", "ls", "--registry", str(tmp_path / "none"), cwd=tmp_path)
    assert "no models registered" in empty.stdout

    bad = quantlab("model", "train", "--data", str(bars), "--registry", str(registry),
                   "--kind", "lstm", cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2
    assert "invalid configuration 'kind'" in bad.stderr
