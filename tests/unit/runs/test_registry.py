"""The run registry: claim once per idempotency key, finish, look up, list."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from quantlab.core.errors import QuantlabError
from quantlab.runs import RunNotFoundError, RunRegistry, idempotency_key

T0 = dt.datetime(2026, 1, 5, 6, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> RunRegistry:
    """The registry on SQLite, and on a real PostgreSQL server (a shared `storage.db_url`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres").database()
    reg = RunRegistry(url)
    yield reg
    reg.close()


def claim(reg: RunRegistry, run_id: str, **kw: object):
    return reg.claim(
        run_id=run_id,
        notebook="nb.ipynb",
        parameters={"mode": "backtest"},
        output_dir=f"runs/{run_id}",
        **kw,
    )


def test_claim_then_finish(registry: RunRegistry) -> None:
    claimed = claim(registry, "r1", started_at=T0)
    assert claimed is not None
    assert claimed.status == "running"
    assert claimed.ended_at is None
    assert claimed.duration_s is None
    done = registry.finish(
        "r1",
        status="succeeded",
        metrics={"fills": 3, "pnl": {"BTC": "0.5"}},
        output_notebook="runs/r1/nb.ipynb",
        report="runs/r1/report.html",
        attempts=2,
    )
    assert done.status == "succeeded"
    assert done.metrics == {"fills": 3, "pnl": {"BTC": "0.5"}}
    assert done.report == "runs/r1/report.html"
    assert done.attempts == 2
    assert done.ended_at is not None
    assert done.duration_s is not None
    assert done.duration_s > 0
    assert registry.get("r1") == done


def test_a_second_claim_of_a_key_is_refused_and_the_first_stands(registry: RunRegistry) -> None:
    key = idempotency_key("nb.ipynb", {"mode": "backtest"}, T0)
    assert claim(registry, "r1", idempotency_key=key, scheduled_for=T0) is not None
    assert claim(registry, "r2", idempotency_key=key, scheduled_for=T0) is None
    assert [r.run_id for r in registry.list()] == ["r1"]
    assert registry.by_key(key).run_id == "r1"


def test_a_reused_run_id_without_a_key_is_an_error(registry: RunRegistry) -> None:
    claim(registry, "r1")
    with pytest.raises(QuantlabError, match="'r1' is already in the registry"):
        claim(registry, "r1")


def test_keys_differ_by_notebook_parameters_and_time() -> None:
    base = idempotency_key("a.ipynb", {"x": 1}, T0)
    assert base == idempotency_key(
        "a.ipynb", {"x": 1}, T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    )
    assert base != idempotency_key("b.ipynb", {"x": 1}, T0)
    assert base != idempotency_key("a.ipynb", {"x": 2}, T0)
    assert base != idempotency_key("a.ipynb", {"x": 1}, T0 + dt.timedelta(minutes=1))
    with pytest.raises(QuantlabError, match="timezone-aware"):
        idempotency_key("a.ipynb", {}, dt.datetime(2026, 1, 5))


def test_list_is_newest_first_and_filters(registry: RunRegistry) -> None:
    for i in range(4):
        claim(
            registry,
            f"r{i}",
            started_at=T0 + dt.timedelta(minutes=i),
            sweep_id="s" if i % 2 else None,
        )
    registry.finish("r1", status="failed", error="cell 3: ValueError: boom")
    assert [r.run_id for r in registry.list()] == ["r3", "r2", "r1", "r0"]
    assert [r.run_id for r in registry.list(limit=2)] == ["r3", "r2"]
    assert [r.run_id for r in registry.list(status="failed")] == ["r1"]
    assert registry.get("r1").error == "cell 3: ValueError: boom"
    assert [r.run_id for r in registry.list(sweep_id="s")] == ["r3", "r1"]
    with pytest.raises(QuantlabError, match="status must be one of"):
        registry.list(status="done")


def test_unknown_runs_and_statuses_are_named(registry: RunRegistry) -> None:
    with pytest.raises(RunNotFoundError, match="'nope'"):
        registry.get("nope")
    with pytest.raises(RunNotFoundError, match="'nope'"):
        registry.finish("nope", status="failed")
    claim(registry, "r1")
    with pytest.raises(QuantlabError, match="run status must be one of"):
        registry.finish("r1", status="ok")  # type: ignore[arg-type]


def test_the_registry_survives_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    first = RunRegistry(url)
    claim(first, "r1")
    first.finish("r1", status="succeeded", metrics={"fills": 1})
    first.close()
    again = RunRegistry(url)
    assert again.get("r1").metrics == {"fills": 1}
    again.close()
