"""A scriptable raw-ASGI upstream for proxy tests: it records what it received and whether
each request ran to the end or was abandoned by its client (the gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Scope = dict[str, Any]


@dataclass
class Script:
    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    delay_before: float = 0.0
    # Called before chunk i is sent (i >= 1); awaiting it lets a test hold the stream.
    gate: Callable[[int], Any] | None = None
    break_after: int | None = None  # cut the connection after this many chunks


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script = Script()
        self.seen: list[Seen] = []
        self.completed = 0
        self.abandoned = 0
        self.abandoned_event = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append(
            Seen(scope["method"], scope["path"], scope["query_string"], scope["headers"], body)
        )
        script = self.script
        work = asyncio.ensure_future(self._respond(script, send))
        gone = asyncio.ensure_future(self._wait_disconnect(receive))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done and not work.done():
            work.cancel()
            self.abandoned += 1
            self.abandoned_event.set()
        else:
            gone.cancel()
            work.result()

    async def _wait_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _respond(self, script: Script, send: Any) -> None:
        await asyncio.sleep(script.delay_before)
        await send(
            {"type": "http.response.start", "status": script.status, "headers": script.headers}
        )
        for i, chunk in enumerate(script.chunks):
            if script.gate is not None and i > 0:
                await script.gate(i)
            if script.break_after is not None and i >= script.break_after:
                raise RuntimeError("scripted break")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.completed += 1
