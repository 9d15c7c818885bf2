"""Run the production notebook on cron schedules (``runs.schedules``) with APScheduler 3.

Each firing of a schedule calls `execute` with an idempotency key made of the notebook, the
schedule's parameters and the trigger's *scheduled* fire time (not the wall-clock time the job
happened to start), so a scheduled run happens once however many scheduler processes, restarts
or retries fire it: the registry refuses a second claim of the key and the repeat returns the
first run's record, marked skipped.

Cron expressions are standard five-field crontab (minute hour day-of-month month
day-of-week), evaluated in the schedule's time zone. Day-of-week numbers follow crontab
(0 or 7 = Sunday), not APScheduler 3's own numbering (0 = Monday): they are translated. A
schedule may restrict the day of the month or the day of the week, not both (crontab ORs the
two, APScheduler ANDs them; rather than guess, such a cron is refused).

Examples
--------
>>> settings = load_settings()  # doctest: +SKIP
>>> next_fire_times(settings, n=2)  # doctest: +SKIP
{'nightly': [datetime(2026, 1, 2, 1, 0, tzinfo=ZoneInfo('UTC')), ...]}
>>> run_schedules(settings)  # blocks; Ctrl-C stops it  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import re
import sys
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quantlab.config import ScheduleConfig, Settings
from quantlab.core.errors import ConfigError
from quantlab.runs.executor import RunError, RunOutcome, execute
from quantlab.runs.registry import RunRegistry, idempotency_key

log = logging.getLogger(__name__)

#: Seconds after its scheduled time a firing may still start (a busy or restarted scheduler).
MISFIRE_GRACE_S = 600

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_TOKEN = re.compile(r"^(\*|[0-7]|[a-z]{3})(?:-([0-7]|[a-z]{3}))?(?:/(\d+))?$")


def _schedule_key(schedule: ScheduleConfig) -> str:
    return f"runs.schedules.{schedule.name}"


def _dow_number(text: str, schedule: ScheduleConfig, field: str) -> int:
    if text.isdigit():
        return int(text) % 7
    if text in _DAYS:
        return _DAYS.index(text)
    raise ConfigError(f"{_schedule_key(schedule)}.cron", f"bad day of week {text!r} in {field!r}")


def crontab_day_of_week(field: str, schedule: ScheduleConfig) -> str:
    """The crontab day-of-week `field` (0/7 = Sunday) as APScheduler 3 day names.

    ``"1-5"`` becomes ``"mon,tue,wed,thu,fri"``, ``"0"`` ``"sun"``, ``"*"`` stays ``"*"``.
    """
    text = field.strip().lower()
    if text in ("*", "?"):
        return "*"
    days: set[int] = set()
    for token in text.split(","):
        m = _DOW_TOKEN.match(token)
        if m is None:
            raise ConfigError(
                f"{_schedule_key(schedule)}.cron",
                f"bad day-of-week {field!r} (use 0-7, sun-sat, ranges, lists and /steps)",
            )
        first, last, step = m.group(1), m.group(2), m.group(3)
        if first == "*":
            if last is not None:
                raise ConfigError(f"{_schedule_key(schedule)}.cron", f"bad day-of-week {field!r}")
            lo, hi = 0, 6
        else:
            lo = int(first) if first.isdigit() else _dow_number(first, schedule, field)
            if last is not None:
                hi = int(last) if last.isdigit() else _dow_number(last, schedule, field)
            else:
                hi = 7 if step is not None else lo
        if hi < lo:
            raise ConfigError(
                f"{_schedule_key(schedule)}.cron", f"day-of-week range {token!r} runs backwards"
            )
        every = int(step) if step else 1
        if every < 1:
            raise ConfigError(f"{_schedule_key(schedule)}.cron", f"bad step in {token!r}")
        days.update(d % 7 for d in range(lo, hi + 1, every))
    if len(days) == 7:
        return "*"
    return ",".join(_DAYS[d] for d in sorted(days))


def trigger_for(schedule: ScheduleConfig) -> Any:
    """The APScheduler `CronTrigger` of `schedule` (crontab semantics, in its time zone).

    Raises
    ------
    ConfigError
        Naming ``runs.schedules.<name>.cron`` or ``.timezone``: a bad expression or zone.
    """
    from apscheduler.triggers.cron import CronTrigger

    try:
        tz = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"{_schedule_key(schedule)}.timezone",
            f"unknown time zone {schedule.timezone!r} (use an IANA name such as "
            f"'UTC' or 'Europe/London'): {exc}",
        ) from None
    fields = schedule.cron.split()
    if len(fields) != 5:
        raise ConfigError(
            f"{_schedule_key(schedule)}.cron",
            f"cron must have five fields (minute hour day month day-of-week), "
            f"got {schedule.cron!r}",
        )
    minute, hour, day, month, dow = fields
    if day not in ("*", "?") and dow not in ("*", "?"):
        raise ConfigError(
            f"{_schedule_key(schedule)}.cron",
            f"{schedule.cron!r} restricts both the day of the month and the day of the week; "
            "crontab runs on either, APScheduler on both: restrict only one",
        )
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day.replace("?", "*"),
            month=month,
            day_of_week=crontab_day_of_week(dow, schedule),
            timezone=tz,
        )
    except ValueError as exc:
        raise ConfigError(
            f"{_schedule_key(schedule)}.cron", f"bad cron {schedule.cron!r}: {exc}"
        ) from None


def schedule_notebook(schedule: ScheduleConfig, settings: Settings) -> str:
    """The notebook `schedule` runs, as configured (its default: ``runs.notebook``)."""
    return schedule.notebook or settings.runs.notebook


def schedule_key(schedule: ScheduleConfig, settings: Settings, scheduled_for: dt.datetime) -> str:
    """The idempotency key of `schedule`'s firing at `scheduled_for` (an aware time)."""
    return idempotency_key(
        schedule_notebook(schedule, settings), schedule.parameters, scheduled_for
    )


def fire(
    schedule: ScheduleConfig,
    scheduled_for: dt.datetime,
    *,
    settings: Settings,
    config_path: str | Path | None = None,
    registry: RunRegistry | None = None,
) -> RunOutcome:
    """Run `schedule` for its fire time `scheduled_for`, once.

    The run's idempotency key is made of the schedule's notebook (as configured), its
    parameters and `scheduled_for`; a second firing for the same time, from this process or
    another sharing the registry, runs nothing and returns the first run's record with
    ``skipped=True`` (whatever that run's status: a failed scheduled run is not re-run).

    Parameters
    ----------
    schedule
        One of ``settings.runs.schedules``.
    scheduled_for
        The trigger's scheduled fire time (not the time it is fired at). A naive time is read
        in the schedule's time zone.
    settings
        The configuration (runs directory, registry, kernel).
    config_path
        The ``quantlab.toml`` the notebook's kernel reads (its ``config`` parameter).
    registry
        The run registry (default: the configured one, opened for this call).

    Returns
    -------
    RunOutcome
        ``.record`` (``succeeded`` or ``failed``) and ``.skipped`` (a repeat firing).

    Raises
    ------
    ConfigError
        The schedule's time zone is unknown.
    RunError, ParameterError
        The notebook, the kernel or a parameter is bad (nothing is recorded).
    """
    if scheduled_for.tzinfo is None:
        try:
            scheduled_for = scheduled_for.replace(tzinfo=ZoneInfo(schedule.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{_schedule_key(schedule)}.timezone",
                f"unknown time zone {schedule.timezone!r}",
            ) from None
    notebook = schedule_notebook(schedule, settings)
    owned = registry is None
    if registry is None:
        registry = RunRegistry.from_settings(settings)
    try:
        return execute(
            notebook,
            dict(schedule.parameters),
            settings=settings,
            config_path=config_path,
            idempotency_key=idempotency_key(notebook, schedule.parameters, scheduled_for),
            scheduled_for=scheduled_for,
            registry=registry,
            progress=False,
        )
    finally:
        if owned:
            registry.close()


def close_thread_event_loop() -> None:
    """Close the asyncio loop papermill (nbclient) left on this worker thread, if any.

    nbclient runs its coroutines on a per-thread event loop it never closes; on a pool
    thread that outlives the run, the loop (and its socket pair) would leak until garbage
    collection. Never call it on the main thread of an asyncio program.
    """
    if threading.current_thread() is threading.main_thread():
        return
    policy = asyncio.get_event_loop_policy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = policy.get_event_loop()
    except RuntimeError:  # no loop on this thread
        return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    policy.set_event_loop(None)


def next_fire_times(
    settings: Settings, n: int = 3, *, now: dt.datetime | None = None
) -> dict[str, list[dt.datetime]]:
    """The next `n` fire times of every configured schedule, in each schedule's time zone.

    Parameters
    ----------
    settings
        The configuration whose ``runs.schedules`` are read.
    n
        How many fire times per schedule.
    now
        Count from this (aware) time; default: now.

    Raises
    ------
    ConfigError
        A schedule's cron or time zone is bad (the error names the schedule).
    """
    now = now or dt.datetime.now(dt.UTC)
    out: dict[str, list[dt.datetime]] = {}
    for schedule in settings.runs.schedules:
        trigger = trigger_for(schedule)
        times: list[dt.datetime] = []
        previous: dt.datetime | None = None
        after = now
        while len(times) < n:
            when = trigger.get_next_fire_time(previous, after)
            if when is None:
                break
            times.append(when)
            previous, after = when, when + timedelta(seconds=1)
        out[schedule.name] = times
    return out


def check_schedules(settings: Settings) -> None:
    """Fail fast on a schedule that could never run: bad cron, time zone or notebook.

    Raises
    ------
    ConfigError
        A bad cron or time zone, naming ``runs.schedules.<name>``.
    RunError
        A schedule's notebook does not exist or lacks a parameter the schedule sets.
    """
    from quantlab.runs.executor import notebook_parameters, resolve_notebook

    for schedule in settings.runs.schedules:
        trigger_for(schedule)
        try:
            declared = notebook_parameters(resolve_notebook(schedule_notebook(schedule, settings)))
        except RunError as exc:
            raise RunError(f"schedule {schedule.name!r}: {exc}") from None
        unknown = sorted(set(schedule.parameters) - set(declared))
        if unknown:
            raise RunError(
                f"schedule {schedule.name!r}: the notebook has no parameter(s) "
                f"{', '.join(unknown)}; its parameters are {', '.join(declared)}"
            )


def _executor_class() -> type:
    """An APScheduler thread-pool executor that hands each job its *scheduled* run time.

    APScheduler 3 calls ``job.func(*args, **kwargs)`` without the time it was due; this
    executor (the documented extension point: `BaseExecutor._do_submit_job`) passes it as
    ``scheduled_for=``, after the same misfire check as APScheduler's own `run_job`.
    """
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MISSED,
        JobExecutionEvent,
    )
    from apscheduler.executors.base import BaseExecutor

    def run_job(job: Any, alias: str, run_times: list[dt.datetime], logger: str) -> list[Any]:
        events = []
        logger_ = logging.getLogger(logger)
        for run_time in run_times:
            if job.misfire_grace_time is not None:
                late = dt.datetime.now(dt.UTC) - run_time
                if late > timedelta(seconds=job.misfire_grace_time):
                    events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
                    logger_.warning(
                        "schedule %s: run due at %s missed by %s", job.id, run_time, late
                    )
                    continue
            try:
                retval = job.func(*job.args, scheduled_for=run_time, **job.kwargs)
            except BaseException:
                exc, tb = sys.exc_info()[1:]
                events.append(
                    JobExecutionEvent(
                        EVENT_JOB_ERROR,
                        job.id,
                        alias,
                        run_time,
                        exception=exc,
                        traceback="".join(traceback.format_tb(tb)),
                    )
                )
                logger_.exception("schedule %s: firing for %s raised", job.id, run_time)
                del tb
            else:
                events.append(
                    JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, alias, run_time, retval=retval)
                )
        return events

    class ScheduledTimeExecutor(BaseExecutor):  # type: ignore[misc]
        def __init__(self, max_workers: int = 4) -> None:
            super().__init__()
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers, thread_name_prefix="quantlab-schedule"
            )

        def _do_submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
            def done(f: concurrent.futures.Future[list[Any]]) -> None:
                exc = f.exception()
                if exc is not None:
                    self._run_job_error(job.id, exc, exc.__traceback__)
                else:
                    self._run_job_success(job.id, f.result())

            f = self._pool.submit(run_job, job, job._jobstore_alias, run_times, self._logger.name)
            f.add_done_callback(done)

        def shutdown(self, wait: bool = True) -> None:
            self._pool.shutdown(wait)

    return ScheduledTimeExecutor


def run_schedules(
    settings: Settings,
    *,
    config_path: str | Path | None = None,
    stop: threading.Event | None = None,
    once: bool = False,
    registry: RunRegistry | None = None,
    misfire_grace_time: int = MISFIRE_GRACE_S,
    triggers: dict[str, Any] | None = None,
    on_fired: Callable[[str, RunOutcome], None] | None = None,
) -> list[tuple[str, RunOutcome]]:
    """Run every ``settings.runs.schedules`` entry on its cron until stopped.

    Each firing runs `fire` for the trigger's scheduled time, in a thread of its own; its
    status is logged (``quantlab.runs.schedule``). A failing run, or a firing that raises
    (a bad parameter, a missing kernel), is logged and recorded where it got that far; the
    scheduler goes on. A schedule never runs twice at once (``max_instances=1``: a firing
    due while the previous run still runs is skipped), missed firings are run once, not once
    per missed time (``coalesce=True``), and a firing later than `misfire_grace_time` is
    skipped.

    Parameters
    ----------
    settings
        The configuration; its ``runs.schedules`` are run.
    config_path
        The ``quantlab.toml`` the notebooks' kernels read.
    stop
        Set it (from another thread or a signal handler) to stop; running notebooks finish
        first. Default: run until interrupted (Ctrl-C).
    once
        Return after the first firing (of any schedule) has finished.
    registry
        The run registry (default: the configured one, opened for the call).
    misfire_grace_time
        Seconds after its scheduled time a firing may still start.
    triggers
        APScheduler triggers replacing the cron of the named schedules (tests).
    on_fired
        Called with the schedule's name and the outcome after each firing.

    Returns
    -------
    list of (str, RunOutcome)
        The firings made before it stopped (the last 1000), in the order they finished.

    Raises
    ------
    ConfigError, RunError
        Before anything is scheduled: a schedule's cron, time zone or notebook is bad, or no
        schedule is configured.
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    schedules = {s.name: s for s in settings.runs.schedules}
    if not schedules:
        raise ConfigError("runs.schedules", "no schedule is configured")
    unknown = sorted(set(triggers or {}) - set(schedules))
    if unknown:
        raise RunError(f"no schedule named {', '.join(map(repr, unknown))}")
    check_schedules(settings)

    stop = stop or threading.Event()
    done: deque[tuple[str, RunOutcome]] = deque(maxlen=1000)
    owned = registry is None
    registry = registry or RunRegistry.from_settings(settings)

    def job(name: str, *, scheduled_for: dt.datetime | None = None) -> None:
        # `scheduled_for` is always passed by the executor; the default only satisfies
        # APScheduler's check of the callable's signature.
        if scheduled_for is None:
            raise RunError(f"schedule {name!r} fired without its scheduled time")
        schedule = schedules[name]
        try:
            outcome = fire(
                schedule,
                scheduled_for,
                settings=settings,
                config_path=config_path,
                registry=registry,
            )
        except Exception as exc:
            log.error(
                "schedule %s: firing for %s could not run: %s: %s",
                name,
                scheduled_for.isoformat(),
                type(exc).__name__,
                exc,
            )
            if once:
                stop.set()
            return
        finally:
            close_thread_event_loop()
        rec = outcome.record
        if outcome.skipped:
            log.info(
                "schedule %s: run for %s already done as %s (%s)",
                name,
                scheduled_for.isoformat(),
                rec.run_id,
                rec.status,
            )
        elif outcome.ok:
            log.info(
                "schedule %s: run %s for %s succeeded in %.1f s",
                name,
                rec.run_id,
                scheduled_for.isoformat(),
                rec.duration_s or 0.0,
            )
        else:
            log.error(
                "schedule %s: run %s for %s failed: %s",
                name,
                rec.run_id,
                scheduled_for.isoformat(),
                rec.error,
            )
        done.append((name, outcome))
        if on_fired is not None:
            try:
                on_fired(name, outcome)
            except Exception:
                log.exception("schedule %s: on_fired callback raised", name)
        if once:
            stop.set()

    executor = _executor_class()(max_workers=max(1, len(schedules)))
    scheduler = BackgroundScheduler(
        executors={"default": executor},
        job_defaults={
            "max_instances": 1,
            "coalesce": True,
            "misfire_grace_time": misfire_grace_time,
        },
        timezone=dt.UTC,
    )
    for name, schedule in schedules.items():
        trigger = (triggers or {}).get(name) or trigger_for(schedule)
        scheduler.add_job(job, trigger, args=(name,), id=name, name=name)
    try:
        scheduler.start()
        for j in scheduler.get_jobs():
            log.info("schedule %s: next run at %s", j.id, j.next_run_time)
        while not stop.wait(0.5):
            pass
    finally:
        scheduler.shutdown(wait=True)
        if owned:
            registry.close()
    return list(done)
