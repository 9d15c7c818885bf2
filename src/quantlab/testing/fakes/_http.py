"""A minimal HTTP/1.1 responder for the fake vendor servers (one request per connection)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


class Reply(Protocol):
    status: int
    body: bytes
    headers: dict[str, str]


Route = Callable[[str, dict[str, str]], Awaitable[Reply]]


async def serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    route: Route,
    tasks: set[asyncio.Task[object]],
) -> None:
    """Read one request, answer it with `route(target, headers)`, close the connection.

    A reply with a true ``drop`` attribute closes the connection without an answer.
    """
    task = asyncio.current_task()
    if task is not None:
        tasks.add(task)
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        _method, target, _version = request_line.split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines if ":" in x)
        }
        reply = await route(target, headers)
        if getattr(reply, "drop", False):
            return
        head_out = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(reply.body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()
        if task is not None:
            tasks.discard(task)
