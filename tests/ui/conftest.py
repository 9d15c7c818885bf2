"""Browser tests of the dashboard: a real engine and `quantlab dashboard` as subprocesses,
Debian's chromium driven by plain sync Playwright (no `playwright install`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantlab.testing.dashboard import CHROMIUM, CHROMIUM_ARGS, DashboardStack


@pytest.fixture
def auth_stack(tmp_path: Path) -> Iterator[DashboardStack]:
    s = DashboardStack(
        tmp_path,
        {
            "QUANTLAB_DASHBOARD_PASSWORD": "s3cret-pass",
            "QUANTLAB_DASHBOARD_COOKIE_SECRET": "cookie-secret-0123456789abcdef0123456789",
        },
    )
    try:
        yield s
    finally:
        s.close()


# Module scope: sync Playwright holds an event loop, closed before other modules run.
@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium (/usr/bin/chromium) is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
