"""A deployment whose processes run different code or configuration refuses to trade.

Three processes (``quantlab live --role ingest|strategy|execution``) on Redis Streams, as in
production, each reporting its code and configuration hashes at start
(`quantlab.engine.deployment`). Three deployments:

* **another configuration**: the strategy process reads a configuration file that differs
  from the others' in one trading setting (the order notional);
* **another code version**: the ingest process runs from a copy of the source tree with one
  file changed (``PYTHONPATH``), as a machine left on an older release would;
* **the same everywhere** (the control): it must trade, or the check would refuse every
  deployment and prove nothing.

A mismatched deployment must halt the breaker (trigger ``deployment``) and send no order to
the venue: no row in the order book of record, while the strategy keeps proposing orders,
which risk denies.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from quantlab.risk import read_state
from quantlab.testing.dashboard import DashboardStack
from quantlab.testing.redis_server import RedisServer
from quantlab.testing.reliability import record

pytestmark = pytest.mark.slow

CONFIG = """\
[strategy]
name = "ema_cross"
id = "ema"
[features]
fast = 3
slow = 8
[execution]
order_notional = {notional}
[[live.sources]]
type = "synthetic"
symbols = 5
rate = 500
bar_interval_s = 0.2
[live]
monitor_every_s = 0.25
[bus]
backend = "redis"
url = "{redis}"
namespace = "{namespace}"
ack_timeout_s = 5
"""
RUN_S = 8  # after the processes are up: long enough for dozens of orders


def other_code(tmp: Path) -> dict[str, str]:
    """The environment of a process running another version of quantlab's code."""
    import quantlab

    tree = tmp / "other-release"
    shutil.copytree(Path(quantlab.__file__).parent, tree / "quantlab")
    init = tree / "quantlab" / "__init__.py"
    init.write_text(init.read_text() + "\n# another release\n")
    return {"PYTHONPATH": str(tree)}


def orders_in_book(state: Path) -> int:
    db = state / "paper" / "quantlab.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from orders").fetchone()[0])


def summaries(tmp: Path) -> dict[str, dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (tmp / "runs").rglob("summary.json")]
    return {s["role"]: s for s in found}


@pytest.mark.parametrize("deployment", ["other_config", "other_code", "same"])
def test_a_mixed_deployment_refuses_to_trade(
    deployment: str, stack: DashboardStack, redis_server: RedisServer
) -> None:
    namespace = f"deploy-{uuid.uuid4().hex[:8]}"
    config = CONFIG.format(redis=redis_server.url, namespace=namespace, notional=100)
    odd_config = CONFIG.format(redis=redis_server.url, namespace=namespace, notional=150)
    procs = {
        "execution": stack.role("execution", config, duration=60),
        "strategy": stack.role(
            "strategy", odd_config if deployment == "other_config" else config, duration=60
        ),
        "ingest": stack.role(
            "ingest",
            config,
            duration=60,
            env_extra=other_code(stack.tmp) if deployment == "other_code" else None,
        ),
    }
    breaker = stack.tmp / "state" / "paper" / "breaker.json"
    deadline = time.monotonic() + RUN_S + 20
    started = None
    while time.monotonic() < deadline:  # the roles up (a snapshot), then RUN_S of trading
        snapshot = stack.tmp / "state" / "paper" / "monitor.json"
        if started is None and snapshot.exists():
            started = time.monotonic()
        if started is not None and time.monotonic() - started > RUN_S:
            break
        for role, proc in procs.items():
            assert proc.poll() is None, f"{role} exited:\n{stack.log(role)}"
        time.sleep(0.25)
    assert started is not None, f"no snapshot:\n{stack.log('execution')}"
    for role in ("ingest", "strategy", "execution"):
        procs[role].terminate()
        assert procs[role].wait(timeout=60) == 0, stack.log(role)

    state = read_state(breaker)
    halted = state is not None and state.trigger == "deployment"
    sent = orders_in_book(stack.tmp / "state")
    runs = summaries(stack.tmp)
    proposed = runs["strategy"]["orders"]
    mismatches = runs["execution"]["deployment"]["mismatches"]
    fingerprints = {r: s["fingerprint"] for r, s in runs.items()}
    print(deployment, {"halted": halted, "sent": sent, "proposed": proposed}, mismatches)
    if deployment == "same":
        record(
            "faults",
            "a deployment on the same code and configuration trades (control)",
            trials=1,
            unit="deployments",
            failed=int(halted) + int(sent == 0),
            failed_what="refused to trade",
            detail=f"{proposed} orders proposed, {sent} sent to the venue",
        )
        assert not halted, mismatches
        assert sent > 0
        assert len({json.dumps(f, sort_keys=True) for f in fingerprints.values()}) == 1
        return
    odd = "strategy" if deployment == "other_config" else "ingest"
    what = "configuration" if deployment == "other_config" else "code version"
    record(
        "faults",
        f"a deployment whose {odd} process runs another {what} refuses to trade",
        trials=1,
        unit="deployments",
        failed=int(not halted) + sent,
        failed_what="orders sent to the venue, or no halt",
        detail=f"breaker halted ({state.reason.split(';')[0] if state else 'not halted'}); "
        f"{proposed} orders proposed, {sent} sent",
    )
    assert halted, f"the breaker was not halted by the deployment check: {state}"
    assert sent == 0, f"{sent} orders reached the venue from a mixed deployment"
    assert proposed > 0, "the strategy proposed no order: the refusal proves nothing"
    key = "config" if deployment == "other_config" else "code"
    assert fingerprints[odd][key] != fingerprints["execution"][key]
    assert any(odd in m for m in mismatches), mismatches
