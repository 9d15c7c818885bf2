"""A TCP proxy for fault injection: it sits between a client and a (fake) server on 127.0.0.1
and breaks the link on command or on a seeded schedule, the way networks break.

Every connection the proxy accepts is forwarded to the upstream ``host:port``. Faults:

``reset``
    Every open connection is closed on both sides with an RST (``SO_LINGER`` 0): the client
    and the server each see "connection reset", and the bytes the proxy held are lost.
``stall``
    Every open connection stops forwarding in both directions but stays open: a half-open
    link, which only a timeout (a ping without pong, a feed without data) can detect. The
    bytes either side sends are read and dropped, as a black hole would, so a sender never
    blocks on a full buffer; when either side gives up and closes, the proxy closes the
    other side. Connections made afterwards are not stalled.
``slow``
    `throttle`: every connection (open or new) delivers at most `bytes_per_s` per direction,
    each chunk `latency_s` late, until `throttle(None)`. Data is delayed, never lost.

The proxy runs in the caller's event loop (asyncio). `stats` counts what it did (connections,
faults by kind, connections each fault hit, bytes forwarded and dropped). `plan` draws a seeded
list of faults and `run` applies them one after another, each once a connection is carrying
data again, so no fault lands on a link that is still reconnecting.

>>> async with TcpProxy("127.0.0.1", fake_port) as proxy:              # doctest: +SKIP
...     url = f"ws://127.0.0.1:{proxy.port}/stream"    # point the client here
...     proxy.reset()                                   # every open link: RST
...     await proxy.run(plan(100, seed=7))              # a storm of 100 faults
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

FaultKind = Literal["reset", "stall", "slow"]
KINDS: Final[tuple[FaultKind, ...]] = ("reset", "stall", "slow")
CHUNK: Final = 16_384  # most bytes read (and forwarded) at a time
_QUEUED: Final = 64  # chunks a direction holds before it stops reading (backpressure)


@dataclass(frozen=True)
class Fault:
    """One fault of a storm: a `kind`; a slow link also has its rate, latency and duration."""

    kind: FaultKind
    bytes_per_s: float = 0.0
    latency_s: float = 0.0
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "slow" and not (self.bytes_per_s > 0 and self.duration_s > 0):
            raise ValueError(
                f"a slow link needs bytes_per_s > 0 and duration_s > 0, got {self.bytes_per_s}, "
                f"{self.duration_s}"
            )
        if self.latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")


def plan(
    n: int,
    *,
    seed: int,
    weights: dict[FaultKind, float] | None = None,
    bytes_per_s: tuple[float, float] = (4_000.0, 32_000.0),
    latency_s: tuple[float, float] = (0.005, 0.05),
    duration_s: tuple[float, float] = (0.05, 0.2),
) -> list[Fault]:
    """`n` faults drawn with `seed`: kinds by `weights` (default: half resets, a quarter each
    stalls and slow links); a slow link's rate, latency and duration uniform in their ranges."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    weights = weights or {"reset": 2.0, "stall": 1.0, "slow": 1.0}
    unknown = set(weights) - set(KINDS)
    if unknown or not any(w > 0 for w in weights.values()):
        raise ValueError(f"weights need positive values for some of {KINDS}, got {weights}")
    rng = random.Random(seed)  # noqa: S311 (a test schedule, not cryptography)
    kinds = list(weights)
    faults = []
    for kind in rng.choices(kinds, [weights[k] for k in kinds], k=n):
        if kind == "slow":
            faults.append(
                Fault(
                    "slow",
                    bytes_per_s=rng.uniform(*bytes_per_s),
                    latency_s=rng.uniform(*latency_s),
                    duration_s=rng.uniform(*duration_s),
                )
            )
        else:
            faults.append(Fault(kind))
    return faults


@dataclass
class ProxyStats:
    """What the proxy did; `faults` counts faults applied, by kind."""

    connections: int = 0  # accepted from clients
    upstream_failures: int = 0  # accepted, but the upstream refused the connection
    faults: Counter[str] = field(default_factory=Counter)
    connections_reset: int = 0
    connections_stalled: int = 0
    connections_slowed: int = 0  # connections that carried data while a slow link was on
    bytes_up: int = 0  # client -> upstream, delivered
    bytes_down: int = 0  # upstream -> client, delivered
    bytes_dropped: int = 0  # read but never delivered (stalled, or lost to a reset)


class _Link:
    """One proxied connection: the client side, the upstream side and a pump each way."""

    def __init__(
        self,
        proxy: TcpProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.stalled = False
        self.slowed = False
        self.delivered_down = 0  # bytes delivered to the client since this link opened
        self.tasks: list[asyncio.Task[None]] = []
        self.queues: list[asyncio.Queue[tuple[float, bytes]]] = []
        self.closed = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for src, dst, down in (
            (self.client, self.upstream, False),
            (self.upstream, self.client, True),
        ):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUED)
            self.queues.append(queue)
            self.tasks.append(loop.create_task(self._read(src[0], queue)))
            writer = loop.create_task(self._write(dst[1], queue, down=down))
            # The link ends when a writer is done: after a reader's EOF it first delivers
            # what that reader queued (a slowed reply arrives whole, then the close).
            writer.add_done_callback(self._ended)
            self.tasks.append(writer)

    async def _read(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):  # a reset by the peer ends the link like an EOF
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.stalled:
                    self.proxy.stats.bytes_dropped += len(data)
                    continue
                await queue.put((loop.time() + self.proxy.latency_s, data))
        await queue.put((0.0, b""))  # the writer delivers what is queued, then the link ends

    async def _write(
        self, writer: asyncio.StreamWriter, queue: asyncio.Queue[tuple[float, bytes]], *, down: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        stats = self.proxy.stats
        with contextlib.suppress(OSError):
            while True:
                due, data = await queue.get()
                if not data:
                    return
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if self.stalled:
                    stats.bytes_dropped += len(data)
                    continue
                while data:
                    rate = self.proxy.bytes_per_s
                    # slow: a 20th of a second's worth at a time, each followed by its time
                    size = len(data) if rate is None else max(1, int(rate / 20))
                    piece, data = data[:size], data[size:]
                    writer.write(piece)
                    await writer.drain()
                    if down:
                        stats.bytes_down += len(piece)
                        self.delivered_down += len(piece)
                    else:
                        stats.bytes_up += len(piece)
                    if rate is not None:
                        if not self.slowed:
                            self.slowed = True
                            stats.connections_slowed += 1
                        await asyncio.sleep(len(piece) / rate)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: a failed pump ends the link, it is not an error
        self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        """Tear the link down: an RST on both sides if `reset`, else a plain close."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.proxy._links.discard(self)
        for task in self.tasks:
            task.cancel()
        for queue in self.queues:  # read, never delivered
            while not queue.empty():
                self.proxy.stats.bytes_dropped += len(queue.get_nowait()[1])
        for _, writer in (self.client, self.upstream):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                writer.close()


class TcpProxy:
    """A fault-injecting TCP proxy on 127.0.0.1 in front of ``upstream_host:upstream_port``.

    Use as ``async with TcpProxy(host, port) as proxy``; point the client at `port`.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.stats = ProxyStats()
        self.bytes_per_s: float | None = None
        self.latency_s = 0.0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close(reset=False)
        for task in list(self._pending):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("start the proxy first: `async with TcpProxy(...) as proxy`")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def links(self) -> int:
        """Connections open (stalled ones included)."""
        return len(self._links)

    @property
    def open_links(self) -> int:
        """Connections open and forwarding (not stalled)."""
        return sum(not link.stalled for link in self._links)

    # -- faults -------------------------------------------------------------------------------
    def reset(self) -> int:
        """RST every open connection (both sides); returns how many."""
        links = list(self._links)
        for link in links:
            link.close(reset=True)
        self.stats.faults["reset"] += 1
        self.stats.connections_reset += len(links)
        return len(links)

    def stall(self) -> int:
        """Stop forwarding on every open connection, leaving it open; returns how many."""
        links = [link for link in self._links if not link.stalled]
        for link in links:
            link.stalled = True
        self.stats.faults["stall"] += 1
        self.stats.connections_stalled += len(links)
        return len(links)

    def throttle(self, bytes_per_s: float | None, latency_s: float = 0.0) -> None:
        """Slow every connection to `bytes_per_s` per direction plus `latency_s` per chunk;
        ``None`` restores full speed."""
        if bytes_per_s is not None and not bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be > 0 or None, got {bytes_per_s}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        if bytes_per_s is not None:
            self.stats.faults["slow"] += 1
            for link in self._links:
                link.slowed = False  # counted again if it carries data while slow
        self.bytes_per_s = bytes_per_s
        self.latency_s = latency_s if bytes_per_s is not None else 0.0

    async def flowing(self, min_bytes: int = 1, timeout: float = 10.0) -> None:
        """Wait until an open, unstalled connection has delivered `min_bytes` to its client
        since this call (a connection opened meanwhile counts from its start)."""
        base = {link: link.delivered_down for link in self._links}
        async with asyncio.timeout(timeout):
            while not any(
                not link.stalled and link.delivered_down - base.get(link, 0) >= min_bytes
                for link in self._links
            ):
                await asyncio.sleep(0.002)

    async def apply(self, fault: Fault, *, stall_timeout: float = 10.0) -> int:
        """Apply `fault` and see it through; returns the connections it hit.

        A stall lasts until the client gives the stalled connections up (its timeout fired)
        or `stall_timeout`; a slow link lasts its `duration_s`, then full speed returns.
        """
        if fault.kind == "reset":
            return self.reset()
        if fault.kind == "stall":
            stalled = [link for link in self._links if not link.stalled]
            hit = self.stall()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(stall_timeout):
                    for link in stalled:
                        await link.closed.wait()
            return hit
        self.throttle(fault.bytes_per_s, fault.latency_s)
        hit = len(self._links)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            self.throttle(None)
        return hit

    async def run(
        self,
        faults: Sequence[Fault],
        *,
        min_bytes: int = 1,
        flowing_timeout: float = 10.0,
        stall_timeout: float = 10.0,
    ) -> Counter[str]:
        """Apply `faults` in order, each once a connection carries data again (`flowing`);
        returns how many of each kind hit at least one connection."""
        hit: Counter[str] = Counter()
        for fault in faults:
            await self.flowing(min_bytes, flowing_timeout)
            if await self.apply(fault, stall_timeout=stall_timeout):
                hit[fault.kind] += 1
        return hit

    # -- forwarding ---------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._pending.add(task)
        try:
            upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            self.stats.upstream_failures += 1
            writer.transport.abort()
            return
        finally:
            if task is not None:
                self._pending.discard(task)
        link = _Link(self, (reader, writer), upstream)
        self._links.add(link)
        link.start()
