"""Security: the dashboard with basic auth configured (`quantlab dashboard`, panel serve).

A real dashboard with a password and a cookie secret, asked with plain HTTP and websocket
clients (no browser): every page, the run reports served from the runs folder (``/reports``),
the app's script, the websocket (with a session token a logged-in user got), with no cookie,
with tampered cookies (a flipped signature or payload character, signed with another secret,
unsigned, expired) and after a wrong password. Panel's public endpoints (the login page,
``/liveness``, the JavaScript libraries under ``/static``) are asked too: they must hold no
app data and no secret. A valid login is the control: it must get in everywhere.

Also: the server process's environment and log hold no secret it does not need (it gets
the cookie secret, nothing else: not the venue keys, not the Redis password, not the
dashboard password, which panel reads from a 0600 file), and without a password the command
refuses every address that is not loopback.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psutil
import pytest
import tornado.web
from typer.testing import CliRunner

from quantlab.config import Secrets
from quantlab.core.errors import QuantlabError
from quantlab.testing.dashboard import DashboardStack
from quantlab.testing.reliability import record

PASSWORD = "pw-canary-7d1e2f9a3b"  # noqa: S105 (a test password)
COOKIE_SECRET = "cookie-canary-0f4e8d2c6b1a9e7f3d5c"  # noqa: S105
REPORT = "REPORT-CANARY-5e8f1a: PnL of run r1"
SECRETS = {
    f"QUANTLAB_{name.upper()}": f"canary-{name}-4b9e1c7d" for name in Secrets.model_fields
} | {
    "QUANTLAB_DASHBOARD_PASSWORD": PASSWORD,
    "QUANTLAB_DASHBOARD_COOKIE_SECRET": COOKIE_SECRET,
}

# What a logged-out client must not get: a page of the app, a report, the app's script.
PRIVATE = [
    "/",
    "/dashboard",
    "/dashboard/",
    "/reports/r1/report.html",
    "/reports/r1/",
    "/reports/",
    "/dashboard/autoload.js?bokeh-autoload-element=x&bokeh-app-path=/dashboard"
    "&bokeh-absolute-url=http://127.0.0.1/dashboard",
    "/static/../reports/r1/report.html",
    "/static/%2e%2e/reports/r1/report.html",
    "/reports/r1/../r1/report.html",
    "/reports/r1%2freport.html",
]
# Public by design: they must hold no app data and no secret.
PUBLIC = ["/login", "/liveness", "/static/js/bokeh.min.js"]
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[DashboardStack, str]]:
    report = tmp_path / "runs" / "r1" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text(f"<html><body>{REPORT}</body></html>")
    stack = DashboardStack(tmp_path, SECRETS)
    try:
        yield stack, stack.dashboard()
    finally:
        stack.close()


def _let_in(response: httpx.Response) -> bool:
    """The response gave the client something only a logged-in user may have."""
    if response.status_code in (301, 302, 303, 307):
        return "/login" not in response.headers.get("location", "")
    return response.status_code == 200 and (
        REPORT in response.text or "bk-" in response.text or "docs_json" in response.text
    )


def _login(base: str, password: str, user: str = "quantlab") -> httpx.Cookies:
    r = httpx.post(
        f"{base}/login", data={"username": user, "password": password}, follow_redirects=False
    )
    return r.cookies


def _tampered(user_cookie: str) -> dict[str, str]:
    """Cookie variants an attacker could make without the cookie secret."""
    value = user_cookie.strip('"')
    payload, _, signature = value.rpartition("|")
    flipped = "0" if signature[-1] != "0" else "1"
    pieces = payload.split("|")
    pieces[-1] = pieces[-1][:-2] + ("Q=" if pieces[-1][-2:] != "Q=" else "A=")  # another name
    old = tornado.web.create_signed_value(
        COOKIE_SECRET, "user", "quantlab", clock=lambda: time.time() - 60 * 86_400
    )
    return {
        "no cookie": "",
        "signature flipped": f"{payload}|{signature[:-1]}{flipped}",
        "payload altered": "|".join(pieces) + f"|{signature}",
        "signed with another secret": tornado.web.create_signed_value(
            "not-the-secret-" * 3, "user", "quantlab"
        ).decode(),
        "unsigned": "quantlab",
        "expired (60 days old, signed)": old.decode(),
    }


def _ws_opens(base: str, token: str, cookie: str | None) -> bool:
    import websockets.sync.client
    from websockets.exceptions import InvalidHandshake

    headers = {"Cookie": f"user={cookie}"} if cookie else {}
    url = base.replace("http://", "ws://") + "/dashboard/ws"
    try:
        with websockets.sync.client.connect(
            url,
            origin=base,  # type: ignore[arg-type]
            subprotocols=["bokeh", token],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=10,
        ):
            return True
    except (InvalidHandshake, OSError):
        return False


def test_the_dashboard_lets_in_no_request_without_a_valid_login(
    dashboard: tuple[DashboardStack, str],
) -> None:
    """Counts requests let in without a valid login (pages, reports, script, websocket).

    The check can fail: the same requests with the logged-in cookie are let in (control),
    so a handler that skipped the cookie check would let the cookie-less request in too."""
    stack, base = dashboard
    # Control: a valid login gets the page, a report and a websocket.
    good = _login(base, PASSWORD)
    user = good.get("user")
    assert user, "a valid login got no cookie"
    page = httpx.get(f"{base}/dashboard", cookies=good, timeout=60)
    assert page.status_code == 200, page.status_code
    found = re.search(r'"token":\s*"([^"]+)"', page.text)
    assert found, "no session token in the page"
    token = found.group(1)
    assert _let_in(httpx.get(f"{base}/reports/r1/report.html", cookies=good, timeout=30))
    assert _ws_opens(base, token, user), "a logged-in websocket was refused"

    trials = let_in = 0
    problems: list[str] = []
    bad_logins = {
        "wrong password": _login(base, PASSWORD + "x"),
        "empty password": _login(base, ""),
        "wrong user": _login(base, PASSWORD, user="admin"),
    }
    for what, cookies in bad_logins.items():
        trials += 1
        if cookies.get("user"):
            let_in += 1
            problems.append(f"{what}: got a user cookie")
    cookies_to_try = {
        **_tampered(user),
        **{w: c.get("user", "") for w, c in bad_logins.items()},
    }
    bodies: list[str] = []
    for what, cookie in cookies_to_try.items():
        jar = {"user": cookie} if cookie else {}
        for path in PRIVATE:
            trials += 1
            r = httpx.get(base + path, cookies=jar, follow_redirects=False, timeout=30)
            bodies.append(r.text)
            if _let_in(r):
                let_in += 1
                problems.append(f"{what}: GET {path} -> {r.status_code}")
        trials += 1
        if _ws_opens(base, token, cookie or None):
            let_in += 1
            problems.append(f"{what}: the websocket opened")
    for path in PUBLIC:
        trials += 1
        r = httpx.get(base + path, follow_redirects=False, timeout=30)
        bodies.append(r.text)
        if REPORT in r.text:  # public code and health, never a run's data
            let_in += 1
            problems.append(f"public {path} -> {r.status_code} with a report")

    record(
        "security",
        "dashboard with auth: requests without a valid login (pages, reports, ws, cookies)",
        trials=trials,
        unit="requests",
        failed=let_in,
        failed_what="requests let in",
        detail=(
            f"{len(PRIVATE)} private paths + the websocket x {len(cookies_to_try)} cookies "
            f"(none, tampered, expired, after bad logins), {len(bad_logins)} bad logins, "
            f"{len(PUBLIC)} public paths; a valid login got in everywhere (control)"
        ),
    )
    assert let_in == 0, problems

    # The server process, its log and what it answered hold no secret it does not need.
    server = psutil.Process(stack.procs[0].pid).children(recursive=True)
    assert server, "no panel process under quantlab dashboard"
    environ = "\0".join(f"{k}={v}" for p in server for k, v in p.environ().items())
    allowed = {"QUANTLAB_DASHBOARD_COOKIE_SECRET"}  # panel signs its cookie with it
    places = {"server environment": environ, "dashboard log": stack.log("dashboard")}
    places["responses"] = "\n".join(bodies)
    leaks = [
        f"{place}: {name}"
        for place, text in places.items()
        for name, value in SECRETS.items()
        if value in text and not (place == "server environment" and name in allowed)
    ]
    record(
        "security",
        "dashboard: secrets in the server's environment, log and answers",
        trials=len(SECRETS) * len(places),
        unit="secrets x places",
        leaked=len(leaks),
        detail="the cookie secret is in the server's environment by design (PANEL_COOKIE_SECRET)",
    )
    assert leaks == [], leaks
    assert COOKIE_SECRET in environ  # what the server needs, it got


class _NoServer:
    """Stands in for the ``panel serve`` process: records what it would have run."""

    started: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str], **_: Any) -> None:
        self.started.append((cmd, env))

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def terminate(self) -> None:
        pass


def test_the_dashboard_refuses_to_serve_beyond_loopback_without_auth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Counts configurations where `quantlab dashboard` would start a server beyond loopback
    without basic auth (the server itself is replaced by a recorder: nothing listens)."""
    from quantlab.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", _NoServer)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, signal.getsignal(signal.SIGTERM))
    runner = CliRunner()
    keys = {k: v for k, v in SECRETS.items() if "DASHBOARD" not in k}
    auth = {"QUANTLAB_DASHBOARD_PASSWORD": PASSWORD, "QUANTLAB_DASHBOARD_COOKIE_SECRET": "c" * 32}
    cases: list[tuple[str, dict[str, str], bool]] = [  # address, env, may it start?
        *((a, keys, False) for a in ("0.0.0.0", "::", "192.0.2.10", "example.com", "0",  # noqa: S104
                                     "10.1.2.3", "::ffff:192.0.2.10")),
        ("0.0.0.0", {**keys, "QUANTLAB_DASHBOARD_PASSWORD": PASSWORD}, False),  # noqa: S104 (no cookie secret)
        ("0.0.0.0", {**keys, **auth}, True),  # noqa: S104 (auth on)
        ("127.0.0.1", keys, True),
        ("::1", keys, True),
        ("localhost", keys, True),
    ]  # fmt: skip
    failed = unclear = 0
    problems: list[str] = []
    try:
        for address, env, may in cases:
            _NoServer.started.clear()
            done = runner.invoke(
                app, ["dashboard", "--address", address, "--port", "5999"], env=env
            )
            if not _NoServer.started:
                text = str(done.exception)
                if may or not isinstance(done.exception, QuantlabError):
                    unclear += 1
                    problems.append(f"{address}: not started: {done.exception!r}")
                elif address not in text and "COOKIE_SECRET" not in text:
                    unclear += 1
                    problems.append(f"{address}: the refusal names neither: {text}")
                continue
            cmd, server_env = _NoServer.started[0]
            if not may or (address not in LOOPBACK and "--basic-auth" not in cmd):
                failed += 1
                problems.append(f"{address}: started a server ({cmd})")
            given = [k for k, v in SECRETS.items() if v in "\0".join(server_env.values())]
            given += [k for k in server_env if k.upper() in SECRETS]
            if given:
                failed += 1
                problems.append(f"{address}: the server's environment holds {given}")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        signal.signal(signal.SIGTERM, saved[2])
    record(
        "security",
        "dashboard: non-loopback addresses need auth (and the server gets no secrets)",
        trials=len(cases),
        unit="configurations",
        failed=failed,
        failed_what="servers beyond loopback without auth, or given secrets",
        detail=(
            f"{sum(not m for _, _, m in cases)} configurations refused as expected; "
            f"{unclear} refusals without a clear error or starts refused"
        ),
    )
    assert problems == [], problems
