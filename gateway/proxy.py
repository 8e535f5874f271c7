"""Forwarding: read the body, admit, send upstream, stream the answer back, meter, settle.

Plain ASGI, so a client disconnect is seen at once: a watcher task waits on ``receive`` for
``http.disconnect`` and cancels the exchange, which closes the upstream request whether
it was streaming or still waiting for its first byte. Whatever happens, the finished
exchange yields one UsageRecord to the hooks, from a shielded ``finally``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from gateway.admission import Admission, Gate, Refused
from gateway.apis import ErrorKind, WireFormat, error_format_for, wire_format_for
from gateway.errors import (
    BodyTooLarge,
    ClientError,
    MalformedBody,
    StorageUnavailable,
    UpstreamError,
)
from gateway.headers import first_values, request_headers, response_headers
from gateway.metering import Outcome, RequestEstimate, Usage, UsageRecord
from gateway.upstream import Upstream

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
UsageHook = Callable[[UsageRecord, Admission | None], Awaitable[None]]

# A non-streamed body is copied for metering up to this size; past it, usage is estimated.
_MAX_METERED_JSON = 8 * 1024 * 1024


class ClientGone(Exception):
    """The client disconnected while its body was still being read."""


@dataclass(slots=True)
class _Exchange:
    """Per-request state, shared by the exchange and its shielded ending."""

    request_id: str
    path: str
    errors: WireFormat
    started: float
    status: int = 0
    outcome: Outcome = Outcome.COMPLETE
    response_started: bool = False
    response_done: bool = False
    estimate: RequestEstimate | None = None
    admission: Admission | None = None
    usage: Usage = field(default_factory=Usage)
    usage_reported: bool = True
    api: str = ""
    body_read: anyio.Event = field(default_factory=anyio.Event)


class Proxy:
    def __init__(
        self,
        upstream: Upstream,
        gate: Gate | None,
        hooks: Sequence[UsageHook],
        max_body_bytes: int,
    ) -> None:
        self.upstream = upstream
        self.gate = gate
        self.hooks = hooks
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        # A trailing slash must not turn a metered route into an unmetered one.
        metered = wire_format_for(scope["method"], path.rstrip("/") or "/")
        ex = _Exchange(
            request_id=uuid.uuid4().hex,
            path=path,
            errors=metered or error_format_for(path),
            started=time.perf_counter(),
            api=metered.name if metered else "",
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope, ex)
                try:
                    await self._exchange(scope, receive, send, ex, metered)
                except Exception:
                    log.exception("request failed request_id=%s", ex.request_id)
                    if not ex.response_started:
                        ex.outcome = Outcome.UPSTREAM_ERROR
                        message = (
                            "The gateway failed on this request; its log has the details under "
                            f"request id {ex.request_id}."
                        )
                        await self._refuse(send, ex, 500, ErrorKind.API_ERROR, message)
                finally:
                    group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(ex)

    async def _watch_disconnect(
        self, receive: Receive, cancel_scope: anyio.CancelScope, ex: _Exchange
    ) -> None:
        # Runs only after the body has been read whole, so every message now is a disconnect.
        await ex.body_read.wait()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not ex.response_done:  # after the last byte, a disconnect is just the end
                    ex.outcome = Outcome.CLIENT_GONE
                cancel_scope.cancel()
                return

    async def _exchange(
        self, scope: Scope, receive: Receive, send: Send, ex: _Exchange, fmt: WireFormat | None
    ) -> None:
        if _unnormalized(ex.path):
            # The upstream may resolve /v1/x/../messages to a metered route the gateway did
            # not meter: refuse rather than guess.
            message = (
                "The path has an empty, '.' or '..' segment; send it normalized, e.g. /v1/messages."
            )
            await self._refuse(send, ex, 400, ErrorKind.INVALID_REQUEST, message)
            return
        try:
            body = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            ex.outcome = Outcome.CLIENT_GONE
            return
        except BodyTooLarge as exc:
            await self._refuse(send, ex, exc.status, ErrorKind.REQUEST_TOO_LARGE, str(exc))
            return
        finally:
            ex.body_read.set()
        extra_headers: list[tuple[bytes, bytes]] = []
        injected = False
        if fmt is not None:
            try:
                prepared = await self._admit(scope, body, fmt, ex)
            except ClientError as exc:
                await self._refuse(send, ex, exc.status, _kind_of(exc), str(exc))
                return
            except StorageUnavailable as exc:
                retry = [(b"retry-after", str(max(1, round(exc.retry_after))).encode())]
                await self._refuse(send, ex, 503, ErrorKind.OVERLOADED, str(exc), retry)
                return
            except Refused as refused:
                ex.admission = refused.admission
                await self._refuse(
                    send, ex, 429, ErrorKind.RATE_LIMIT, refused.message, refused.headers
                )
                return
            body, injected = prepared
            extra_headers = self._limit_headers(ex, fmt)
        await self._forward(scope, send, ex, fmt, body, injected, extra_headers)

    async def _admit(
        self, scope: Scope, body: bytes, fmt: WireFormat, ex: _Exchange
    ) -> tuple[bytes, bool]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedBody("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise MalformedBody("The request body must be a JSON object.")
        try:
            ex.estimate = fmt.estimate(data)
            prepared = fmt.prepare(data, body)
        except UnicodeEncodeError:
            raise MalformedBody(
                "The request body holds a lone surrogate escape (e.g. \\ud800), which is not "
                "text; send valid Unicode."
            ) from None
        if self.gate is not None:
            headers = first_values(scope["headers"])
            # Shielded: once the store has debited, the admission must reach _finish even
            # if the client leaves meanwhile, or its reservation would be held until expiry.
            with anyio.CancelScope(shield=True):
                ex.admission = await self.gate.admit(
                    ex.request_id, scope, headers, ex.estimate, fmt
                )
        return prepared

    def _limit_headers(self, ex: _Exchange, fmt: WireFormat) -> list[tuple[bytes, bytes]]:
        if ex.admission is None:
            return []
        pairs = fmt.rate_limit_headers(ex.admission.shown, time.time())
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        ex: _Exchange,
        fmt: WireFormat | None,
        body: bytes,
        injected: bool,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        client_ip = scope["client"][0] if scope.get("client") else ""
        private = self.gate.private_headers() if self.gate is not None else frozenset()
        headers = request_headers(scope["headers"], client_ip, drop=private)
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            response = await self.upstream.send(scope["method"], target, headers, body)
        except UpstreamError as exc:
            ex.outcome = Outcome.UPSTREAM_ERROR
            kind = ErrorKind.TIMEOUT if exc.status == 504 else ErrorKind.API_ERROR
            log.warning("upstream failed request_id=%s: %s", ex.request_id, exc)
            await self._refuse(send, ex, exc.status, kind, _upstream_sentence(exc))
            return
        try:
            await self._relay(send, ex, fmt, response, injected, extra_headers)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _relay(
        self,
        send: Send,
        ex: _Exchange,
        fmt: WireFormat | None,
        response: Any,
        injected: bool,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        ex.status = response.status
        content_type = next(
            (v.decode("latin-1") for n, v in response.headers if n.lower() == b"content-type"), ""
        )
        streamed = content_type.startswith("text/event-stream")
        meter = fmt.stream_meter(injected) if fmt is not None and streamed else None
        # The gateway's own rate-limit headers replace the upstream's of the same names.
        ours = frozenset(name.decode("latin-1") for name, _ in extra_headers)
        headers = response_headers(
            response.headers, drop_length=meter is not None and injected, drop=ours
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": headers + extra_headers,
            }
        )
        ex.response_started = True
        copy = bytearray() if fmt is not None and meter is None else None
        try:
            async for chunk in response.chunks():
                out = meter.feed(chunk) if meter is not None else chunk
                if copy is not None and len(copy) < _MAX_METERED_JSON:
                    copy += chunk
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if meter is not None and (tail := meter.flush()):
                await send({"type": "http.response.body", "body": tail, "more_body": True})
        except UpstreamError as exc:
            ex.outcome = Outcome.UPSTREAM_BROKE
            log.warning("upstream stream broke request_id=%s: %s", ex.request_id, exc)
        finally:
            if fmt is not None:
                self._meter_result(ex, fmt, meter, copy)
        ex.response_done = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _meter_result(
        self, ex: _Exchange, fmt: WireFormat, meter: Any, copy: bytearray | None
    ) -> None:
        if ex.status >= 400:
            ex.usage, ex.usage_reported = Usage(), True  # an error response generated nothing
            return
        if meter is not None:
            usage, reported = meter.result()
        else:
            parsed = fmt.usage_from_json(bytes(copy or b""))
            usage, reported = (parsed, True) if parsed is not None else (Usage(), False)
        if not reported and usage.billable_input_tokens == 0 and ex.estimate is not None:
            # No usage came (cut short, or an OpenAI stream without its last chunk): the
            # input was sent and processed all the same, so charge the estimate.
            usage = Usage(
                input_tokens=ex.estimate.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
            )
        ex.usage, ex.usage_reported = usage, reported

    async def _refuse(
        self,
        send: Send,
        ex: _Exchange,
        status: int,
        kind: ErrorKind,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        ex.status = status
        if ex.outcome is Outcome.COMPLETE:
            ex.outcome = Outcome.REFUSED
        body = ex.errors.error_body(status, kind, message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        ex.response_done = True
        await send({"type": "http.response.body", "body": body})

    async def _finish(self, ex: _Exchange) -> None:
        if ex.estimate is None:
            return  # not a metered exchange: nothing was reserved, nothing to record
        if ex.outcome is Outcome.CLIENT_GONE and ex.status == 0:
            ex.usage, ex.usage_reported = Usage(), True  # gone before the upstream answered
        record = UsageRecord(
            request_id=ex.request_id,
            api=ex.api,
            path=ex.path,
            status=ex.status,
            outcome=ex.outcome,
            estimate=ex.estimate,
            usage=ex.usage,
            usage_reported=ex.usage_reported,
            duration_s=time.perf_counter() - ex.started,
        )
        for hook in self.hooks:
            try:
                await hook(record, ex.admission)
            except Exception:
                log.exception("usage hook failed request_id=%s", ex.request_id)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                f"The request body exceeds the gateway's limit of {limit} bytes; send a "
                "smaller request."
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _unnormalized(path: str) -> bool:
    segments = path.split("/")[1:]
    return any(segment in (".", "..") for segment in segments) or "" in segments[:-1]


def _kind_of(exc: ClientError) -> ErrorKind:
    if exc.status == 401:
        return ErrorKind.AUTHENTICATION
    if exc.status == 429:
        return ErrorKind.RATE_LIMIT
    return ErrorKind.INVALID_REQUEST


def _upstream_sentence(exc: UpstreamError) -> str:
    if exc.status == 504:
        return "The model API did not answer in time; try again."
    return "The model API could not be reached; try again shortly."


__all__ = ["Proxy", "read_body"]
