"""The dashboard in a real browser, following a real live engine."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantlab.testing.dashboard import LIVE_TOML, REDIS_BUS_TOML

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
TABS = ("markets", "orders", "portfolio", "signals", "risk", "pipeline", "costs", "runs")
VISIBLE_CANVAS = ".bk-Canvas >> visible=true"
VISIBLE_TABLE = ":is(.tabulator, table) >> visible=true"


def _open(browser: Any, url: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []

    def console(m: Any) -> None:
        # Every page, the login page included (apps/login.html: no CDN assets), loads
        # without a console error.
        if m.type == "error":
            errors.append(f"console: {m.text} at {m.location}")

    page.on("console", console)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(url)
    return context, page, errors


def _tab(page: Any, name: str) -> None:
    page.locator(".bk-tab", has_text=name).first.click()
    page.locator(VISIBLE_CANVAS).first.wait_for(state="visible", timeout=15_000)
    page.locator(VISIBLE_TABLE).first.wait_for(state="visible", timeout=15_000)


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_dashboard_follows_a_live_engine(stack: Any, chromium: Any) -> None:
    stack.engine(duration=120)
    base = stack.dashboard()
    stack.wait_snapshot()
    context, page, errors = _open(chromium, f"{base}/dashboard")
    try:
        status = page.locator(".ql-status").first
        _wait(lambda: "engine running" in status.inner_text(), 20, "the running header")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        # markets: the selected symbol's last price moves
        _tab(page, "markets")
        price = page.locator(".ql-last-price").first
        _wait(lambda: price.inner_text() not in ("", "—"), 10, "a last price")
        first = price.inner_text()
        _wait(lambda: price.inner_text() != first, 6, "the last price to change")
        page.wait_for_timeout(1500)  # let the price chart collect a few seconds
        page.screenshot(path=str(ARTIFACTS / "markets.png"), full_page=True)

        # orders: the fills table grows as fills arrive
        _tab(page, "orders")
        fills = page.locator(".ql-fills .tabulator-row")
        before = fills.count()
        _wait(lambda: fills.count() > before, 30, f"more than {before} fill rows")
        page.screenshot(path=str(ARTIFACTS / "orders.png"), full_page=True)

        for name in TABS[2:]:
            _tab(page, name)
            page.wait_for_timeout(600)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        assert "engine running" in status.inner_text()
        assert not errors, errors
    finally:
        context.close()
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":  # the README's screenshot
        shutil.copyfile(ARTIFACTS / "markets.png", ROOT / "docs" / "dashboard.png")


def test_dashboard_needs_login_when_a_password_is_set(auth_stack: Any, chromium: Any) -> None:
    import websockets.sync.client
    from websockets.exceptions import InvalidHandshake

    base = auth_stack.dashboard()
    r = httpx.get(f"{base}/dashboard", follow_redirects=False, timeout=5)
    assert r.status_code in (302, 303, 401, 403), r.status_code
    if r.status_code in (302, 303):
        assert "/login" in r.headers["location"]
    assert "bk-Canvas" not in r.text
    assert "quantlab" not in r.text

    ws_url = base.replace("http://", "ws://") + "/dashboard/ws"
    with (
        pytest.raises((InvalidHandshake, OSError)),
        websockets.sync.client.connect(ws_url, origin=base, open_timeout=5),
    ):
        pass

    context, page, errors = _open(chromium, f"{base}/dashboard")
    try:
        page.wait_for_url("**/login**", timeout=10_000)
        page.fill("input[name=username]", "quantlab")
        page.fill("input[name=password]", "s3cret-pass")
        page.locator("button[type=submit], input[type=submit]").first.click()
        page.wait_for_url("**/dashboard**", timeout=10_000)
        page.locator(VISIBLE_CANVAS).first.wait_for(state="visible", timeout=15_000)
        status = page.locator(".ql-status").first
        _wait(lambda: "no engine has run yet" in status.inner_text(), 10, "the no-engine header")
        assert not errors, errors
    finally:
        context.close()


def test_dashboard_says_when_the_engine_is_not_running(stack: Any, chromium: Any) -> None:
    path = Path(stack.tmp) / "state" / "paper" / "monitor.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "status": "running",
                "pid": 2**22 + 7,
                "written_at": time.time() - 600,
                "run_id": "r-old",
                "markets": {
                    "AAA/USD": {
                        "last": 1.0,
                        "bid": 0.9,
                        "ask": 1.1,
                        "spread": 0.2,
                        "volume": 3.0,
                        "ts": 1,
                        "history": [[1, 1.0, 0.2, 3.0]],
                    }
                },
            }
        )
    )
    base = stack.dashboard()
    context, page, errors = _open(chromium, f"{base}/dashboard")
    try:
        status = page.locator(".ql-status").first
        _wait(lambda: "engine not running" in status.inner_text(), 15, "the stopped header")
        assert "showing the last stored state from" in status.inner_text()
        _tab(page, "markets")
        page.screenshot(path=str(ARTIFACTS / "not-running.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()


def test_dashboard_follows_a_multi_process_engine(
    stack: Any, chromium: Any, redis_server: Any
) -> None:
    """Ingest, strategy and execution in three processes on Redis: the dashboard (reading the
    execution role's snapshot) shows all three, their events, and fills as they arrive."""
    config = LIVE_TOML.format(symbols=5, rate=500) + REDIS_BUS_TOML.format(
        url=redis_server.url, namespace=f"ui-{os.getpid()}"
    )
    stack.roles(config, ("execution", "strategy", "ingest"), duration=120)
    base = stack.dashboard()
    stack.wait_snapshot()
    context, page, errors = _open(chromium, f"{base}/dashboard")
    try:
        status = page.locator(".ql-status").first
        _wait(lambda: "engine running" in status.inner_text(), 20, "the running header")
        _tab(page, "pipeline")
        table = page.locator(VISIBLE_TABLE).filter(has_text="age_s").first

        def all_roles() -> bool:
            text = table.inner_text() if table.count() else ""
            return all(role in text for role in ("ingest", "strategy", "execution"))

        _wait(all_roles, 30, "the three roles in the processes table")
        _tab(page, "orders")
        fills = page.locator(".ql-fills .tabulator-row")
        _wait(lambda: fills.count() > 0, 40, "fills made across the three processes")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "multi-process-orders.png"), full_page=True)
        assert not errors, errors
    finally:
        context.close()
