"""The code and configuration fingerprints, and the check that halts a mixed deployment."""

from __future__ import annotations

import shutil
from pathlib import Path

from quantlab.bus import InProcessBus, topics
from quantlab.config import Settings
from quantlab.engine.deployment import DeploymentCheck, code_hash, config_hash, tree_hash
from quantlab.engine.monitor import ROLE_FIGURES_KIND


def test_config_hash_ignores_what_differs_between_machines_but_not_trading_settings() -> None:
    base = Settings()
    same = Settings.model_validate(
        {
            "storage": {"lake_root": "/elsewhere/lake", "state_dir": "/elsewhere/state"},
            "dashboard": {"port": 6000},
            "log_level": "DEBUG",
            "bus": {"url": "redis://10.0.0.5:6379/0"},
        }
    )
    assert config_hash(same) == config_hash(base)
    other = Settings.model_validate({"execution": {"order_notional": 150}})
    assert config_hash(other) != config_hash(base)
    assert len(config_hash(base)) == 64


def test_code_hash_follows_the_content_of_every_module(tmp_path: Path) -> None:
    import quantlab

    tree = tmp_path / "quantlab"
    shutil.copytree(Path(quantlab.__file__).parent, tree)
    assert tree_hash(tree) == code_hash()  # where it lies does not matter
    (tree / "core" / "ids.py").write_text((tree / "core" / "ids.py").read_text() + "\n#\n")
    assert tree_hash(tree) != code_hash()


def report(role: str, fp: dict[str, str] | None) -> dict[str, object]:
    out: dict[str, object] = {"kind": ROLE_FIGURES_KIND, "role": role, "pid": 7, "host": "h"}
    if fp is not None:
        out["fingerprint"] = fp
    return out


async def test_the_check_halts_once_per_mismatched_process() -> None:
    halts: list[tuple[str, str]] = []

    async def halt(trigger: str, reason: str) -> None:
        halts.append((trigger, reason))

    own = {"code": "a" * 64, "config": "b" * 64}
    check = DeploymentCheck(own, halt)
    bus = InProcessBus()
    await check.start(bus)
    metric = topics.system("metric")
    await bus.publish(metric, report("strategy", dict(own)))
    await bus.publish(metric, {"kind": "something else"})
    await bus.drain()
    assert halts == []
    await bus.publish(metric, report("ingest", {"code": "c" * 64, "config": "b" * 64}))
    await bus.publish(metric, report("ingest", {"code": "c" * 64, "config": "b" * 64}))
    await bus.drain()
    assert len(halts) == 1
    assert halts[0][0] == "deployment"
    assert "ingest pid 7@h runs other code: code cccccccccccc (ours aaaaaaaaaaaa)" in halts[0][1]
    await bus.publish(metric, report("strategy", None))  # no fingerprint: an older release
    await bus.drain()
    assert len(halts) == 2
    assert check.stats()["processes"] == 2
    await bus.close()
