"""Which code and which configuration a process runs, and a deployment that must agree.

A multi-process engine (``quantlab live --role``) is several processes, maybe on several
machines, deployed one by one: one left on yesterday's code, or started with another
configuration file, would trade on rules the others do not follow. Every process computes,
at start, two fingerprints and logs them:

* `code_hash`: SHA-256 over quantlab's own files (every ``.py`` of the package and the model
  registry, which pins each model's bytes by its SHA-256), by relative path;
* `config_hash`: SHA-256 over the effective settings (TOML, environment, defaults), without
  the secrets and without what may differ between the machines of one deployment: `storage`
  (paths), `dashboard`, `runs`, `log_level`, and the bus's `url` (one Redis seen under two
  names).

The roles publish them with their figures (`FigurePublisher`), and the process that trades
(the execution role) runs a `DeploymentCheck`: the first report of another process whose
code or configuration differs halts the circuit breaker (trigger ``deployment``), so no order
goes out until a person has looked (`quantlab risk reset` after redeploying). The hashes are
also in the monitor snapshot (the dashboard) and the run's summary.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from quantlab.bus import Bus, topics
from quantlab.bus.base import Envelope
from quantlab.config import Settings
from quantlab.engine.monitor import ROLE_FIGURES_KIND

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent
CODE_SUFFIXES = (".py",)
CODE_FILES = ("_data/models/registry.json",)
PER_MACHINE = ("storage", "dashboard", "runs", "log_level")


@functools.cache
def code_hash() -> str:
    """SHA-256 (hex) of the code of the quantlab this process runs (`tree_hash`)."""
    return tree_hash(PACKAGE)


def tree_hash(package: Path) -> str:
    """SHA-256 (hex) of a quantlab package folder: every ``.py`` file and the model registry,
    each by its path relative to the folder."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
    )
    files += [package / name for name in CODE_FILES if (package / name).is_file()]
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def config_hash(settings: Settings) -> str:
    """SHA-256 (hex) of the settings that must be the same in every process of a deployment
    (see the module's doc for what is left out)."""
    data: dict[str, Any] = settings.model_dump(mode="json", exclude={"secrets", *PER_MACHINE})
    data.get("bus", {}).pop("url", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(settings: Settings) -> dict[str, str]:
    """This process's ``{"code": ..., "config": ...}`` hashes."""
    return {"code": code_hash(), "config": config_hash(settings)}


Halt = Callable[[str, str], Awaitable[None]]


class DeploymentCheck:
    """Halts trading when another process of the deployment runs other code or settings.

    It reads the role reports on ``system.metric`` (`FigurePublisher`'s, which carry each
    process's `fingerprint`), compares them with this process's, and on the first mismatch
    of a process calls `halt` (the risk engine's: the breaker goes to HALTED, trigger
    ``deployment``). A report without fingerprints (an older quantlab) is a mismatch too.
    """

    name = "deployment"

    def __init__(self, own: dict[str, str], halt: Halt) -> None:
        self.own = own
        self._halt = halt
        self.seen: dict[str, dict[str, Any]] = {}  # "role pid@host" -> its fingerprint
        self.mismatches: list[str] = []

    async def start(self, bus: Bus) -> None:
        bus.consume(topics.system("metric"), self._on_metric, name=self.name)

    async def stop(self) -> None:
        return None

    async def _on_metric(self, envelope: Envelope) -> None:
        report = envelope.payload
        if not isinstance(report, dict) or report.get("kind") != ROLE_FIGURES_KIND:
            return
        who = f"{report.get('role')} pid {report.get('pid')}@{report.get('host')}"
        theirs = report.get("fingerprint")
        if who in self.seen and self.seen[who] == theirs:
            return
        self.seen[who] = theirs if isinstance(theirs, dict) else {}
        differs = [
            k
            for k in ("code", "config")
            if not isinstance(theirs, dict) or theirs.get(k) != self.own[k]
        ]
        if not differs:
            log.info("deployment: %s runs the same code and configuration", who)
            return
        detail = ", ".join(
            f"{k} {str((theirs or {}).get(k, 'unknown'))[:12]} (ours {self.own[k][:12]})"
            for k in differs
        )
        reason = f"{who} runs other {' and '.join(differs)}: {detail}; trading halted"
        self.mismatches.append(reason)
        log.error("deployment: %s", reason)
        await self._halt("deployment", reason)

    def stats(self) -> dict[str, Any]:
        return {
            "fingerprint": self.own,
            "processes": len(self.seen),
            "mismatches": list(self.mismatches),
        }
