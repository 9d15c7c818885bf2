"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests (Debian's postgresql, never mocked).

`PostgresServer` runs ``initdb`` into a temp folder and ``pg_ctl start`` on a free port with
``listen_addresses=127.0.0.1``, trust auth for the local test user, no fsync (a scratch
cluster), and stops it (``-m immediate``) on exit. Run as root, the cluster runs as the
``postgres`` user, which PostgreSQL requires. `database()` creates a fresh database and
returns its SQLAlchemy URL (psycopg 3).

>>> with PostgresServer() as pg:  # doctest: +SKIP
...     url = pg.database()
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from quantlab.core.errors import QuantlabError
from quantlab.testing.net import free_port
from quantlab.testing.services import LocalServer

USER = "quant"


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise QuantlabError(
            f"PostgreSQL's {name} not found: install Debian's postgresql (`apt-get install "
            "postgresql`; `make test` does it)"
        )
    return found


class PostgresServer(LocalServer):
    """A scratch PostgreSQL cluster; use it as a context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ql-pg-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0
        self._started = False

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
        if done.returncode != 0:
            raise QuantlabError(
                f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
            )

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            _bin("initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "pg.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        self._started = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str | None = None) -> str:
        """Create a fresh database; return its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, never user input
        return self.url(name)

    def stop(self) -> None:
        if self._started:
            try:
                self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            finally:
                self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
