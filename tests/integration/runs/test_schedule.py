"""Schedules: one run per (notebook, parameters, scheduled time), through APScheduler 3."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

import pytest

from quantlab.config import ScheduleConfig, load_settings
from quantlab.core.errors import ConfigError
from quantlab.runs.registry import RunRegistry
from quantlab.runs.schedule import (
    close_thread_event_loop,
    crontab_day_of_week,
    fire,
    next_fire_times,
    run_schedules,
    trigger_for,
)
from quantlab.testing.notebooks import write_notebook

pytestmark = pytest.mark.integration


def tiny_notebook(path: Path) -> Path:
    """A `parameters` cell and a cell that raises when ``fail`` is true."""
    return write_notebook(
        path,
        "x = 1\nfail = False\nrun_id = None\nrun_dir = None",
        "if fail:\n    raise ValueError(f'asked to fail (x={x})')\nprint('x is', x)",
    )


def make_settings(tmp_path: Path, schedules: list[dict]):
    notebook = tiny_notebook(tmp_path / "tiny.ipynb")
    for s in schedules:
        s.setdefault("notebook", str(notebook))
    return load_settings(
        storage={"runs_dir": str(tmp_path / "runs")}, runs={"schedules": schedules}
    )


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "runs").glob("*/*") if p.is_dir())


AT = dt.datetime(2026, 3, 2, 6, 30, tzinfo=dt.UTC)


def test_same_scheduled_time_runs_once_and_another_time_runs_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, [{"name": "tiny", "cron": "30 6 * * *"}])
    schedule = settings.runs.schedules[0]

    first = fire(schedule, AT, settings=settings)
    assert first.ok
    assert not first.skipped
    assert first.record.scheduled_for == AT
    again = fire(schedule, AT, settings=settings)
    assert again.skipped
    assert again.record.run_id == first.record.run_id
    # the same instant in another zone is the same scheduled time
    again_ny = fire(schedule, AT.astimezone(dt.timezone(dt.timedelta(hours=-5))), settings=settings)
    assert again_ny.skipped

    registry = RunRegistry.from_settings(settings)
    try:
        assert len(registry.list(limit=None)) == 1
        assert len(run_dirs(tmp_path)) == 1

        later = fire(schedule, AT + dt.timedelta(days=1), settings=settings)
        assert later.ok
        assert not later.skipped
        assert later.record.run_id != first.record.run_id
        assert len(registry.list(limit=None)) == 2
        assert len(run_dirs(tmp_path)) == 2
    finally:
        registry.close()


def test_two_concurrent_firings_make_one_run(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, [{"name": "tiny", "cron": "30 6 * * *"}])
    schedule = settings.runs.schedules[0]
    barrier = threading.Barrier(2)
    outcomes = []

    def go() -> None:
        barrier.wait()
        try:
            outcomes.append(fire(schedule, AT, settings=settings))
        finally:
            close_thread_event_loop()

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o.skipped for o in outcomes) == [False, True]
    assert len({o.record.run_id for o in outcomes}) == 1
    registry = RunRegistry.from_settings(settings)
    try:
        rows = registry.list(limit=None)
    finally:
        registry.close()
    assert len(rows) == 1
    assert rows[0].status == "succeeded"
    assert len(run_dirs(tmp_path)) == 1


def test_scheduler_fires_and_survives_a_failing_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from apscheduler.triggers.cron import CronTrigger

    settings = make_settings(
        tmp_path,
        [
            {"name": "bad", "cron": "0 1 * * *", "parameters": {"fail": True}},
            {"name": "good", "cron": "0 1 * * *", "parameters": {"x": 7}},
        ],
    )
    every_second = CronTrigger(second="*", timezone="UTC")
    stop = threading.Event()
    seen: dict[str, list] = {"bad": [], "good": []}

    def on_fired(name, outcome) -> None:
        seen[name].append(outcome)
        if len(seen["bad"]) >= 2 and seen["good"]:
            stop.set()

    timer = threading.Timer(30, stop.set)  # a safety net: the test fails below, never hangs
    timer.start()
    with caplog.at_level(logging.INFO, logger="quantlab.runs.schedule"):
        try:
            fired = run_schedules(
                settings,
                stop=stop,
                triggers={"bad": every_second, "good": every_second},
                on_fired=on_fired,
            )
        finally:
            timer.cancel()

    # the failing schedule fired again after its failure: the scheduler kept going
    assert len(seen["bad"]) >= 2
    assert seen["good"]
    bad = [o.record for o in seen["bad"]]
    assert all(r.status == "failed" and "asked to fail" in (r.error or "") for r in bad)
    # each firing is for its own scheduled second
    assert len({r.scheduled_for for r in bad}) == len(bad)
    assert all(r.scheduled_for.microsecond == 0 for r in bad)
    good = seen["good"][0].record
    assert good.status == "succeeded"
    assert good.scheduled_for is not None
    assert {name for name, _ in fired} == {"bad", "good"}
    assert "failed: cell" in caplog.text
    assert "succeeded in" in caplog.text

    registry = RunRegistry.from_settings(settings)
    try:
        rows = registry.list(limit=None)
    finally:
        registry.close()
    assert len(rows) == len(fired)
    assert len({r.idempotency_key for r in rows}) == len(rows)


def test_run_schedules_once_returns_after_the_first_firing(tmp_path: Path) -> None:
    from apscheduler.triggers.cron import CronTrigger

    settings = make_settings(tmp_path, [{"name": "tiny", "cron": "0 1 * * *"}])
    fired = run_schedules(
        settings, once=True, triggers={"tiny": CronTrigger(second="*", timezone="UTC")}
    )
    assert [name for name, _ in fired] == ["tiny"]
    assert fired[0][1].ok


def test_next_fire_times_and_crontab_weekdays(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        [
            {"name": "weekdays", "cron": "30 6 * * 1-5", "timezone": "Europe/London"},
            {"name": "sunday", "cron": "0 0 * * 0"},
        ],
    )
    now = dt.datetime(2026, 3, 6, 12, 0, tzinfo=dt.UTC)  # a Friday
    times = next_fire_times(settings, n=3, now=now)
    assert [t.strftime("%a %H:%M") for t in times["weekdays"]] == [
        "Mon 06:30",
        "Tue 06:30",
        "Wed 06:30",
    ]
    assert times["weekdays"][0].utcoffset() == dt.timedelta(0)  # London in winter
    assert [t.strftime("%a %d") for t in times["sunday"]] == ["Sun 08", "Sun 15", "Sun 22"]

    s = ScheduleConfig(name="x", cron="* * * * *")
    assert crontab_day_of_week("0", s) == "sun"
    assert crontab_day_of_week("7", s) == "sun"
    assert crontab_day_of_week("1-5", s) == "mon,tue,wed,thu,fri"
    assert crontab_day_of_week("*/2", s) == "sun,tue,thu,sat"
    assert crontab_day_of_week("sat,sun", s) == "sun,sat"
    assert crontab_day_of_week("0-7", s) == "*"


@pytest.mark.parametrize(
    ("cron", "tz", "key", "words"),
    [
        ("61 * * * *", "UTC", "runs.schedules.nope.cron", "61"),
        ("* * * * funday", "UTC", "runs.schedules.nope.cron", "funday"),
        ("0 0 1 * mon", "UTC", "runs.schedules.nope.cron", "both"),
        ("0 0 * * *", "Mars/Olympus", "runs.schedules.nope.timezone", "Mars/Olympus"),
    ],
)
def test_bad_cron_or_timezone_names_the_schedule(
    tmp_path: Path, cron: str, tz: str, key: str, words: str
) -> None:
    settings = make_settings(tmp_path, [{"name": "nope", "cron": cron, "timezone": tz}])
    with pytest.raises(ConfigError) as err:
        trigger_for(settings.runs.schedules[0])
    assert err.value.key == key
    assert words in str(err.value)
    with pytest.raises(ConfigError, match="nope"):
        next_fire_times(settings)
    with pytest.raises(ConfigError, match="nope"):
        run_schedules(settings, once=True)
