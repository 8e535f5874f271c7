"""Forwarding: the gate, then the upstream, then metering and settling.

Every request walks one line, and stops at the first step it fails:

    target  (400)  the canonical path and query (``gateway.target``): what is matched,
                   metered and forwarded are one string
    route   (404, 405, 403)  the policy set's route table, closed by default
    identity (401, 429)  from the headers alone: no body is read for an unknown caller
    body    (413, 400)  read whole, parsed, estimated; an uncapped request gets a cap
    admit   (429, 503)  the estimate reserved in every policy that applies
    forward (502, 504)  sent once; streamed back as it comes; usage metered on the way

Plain ASGI, so a client disconnect is seen at once: a watcher task waits on ``receive`` for
``http.disconnect`` and cancels the exchange, which closes the upstream request whether
it was streaming or still waiting for its first byte. Whatever happens, the finished
exchange yields one UsageRecord to the hooks, from a shielded ``finally``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import anyio
import anyio.lowlevel

from gateway.admission import Admission, Gate, Refused, help_link
from gateway.answers import Answer, Reason, error_kind, reason_of, upstream_sentence
from gateway.apis import (
    FAMILIES,
    FORMATS,
    ErrorKind,
    WireFormat,
    error_format_for,
    load_body,
)
from gateway.apis.base import TOO_DEEP, rewritten
from gateway.errors import (
    BodyTooLarge,
    ClientError,
    MalformedBody,
    StorageUnavailable,
    UpstreamError,
)
from gateway.exchange import ClientGone, Exchange, Receive, Send, read_body
from gateway.headers import first_values, request_headers
from gateway.identity import Caller
from gateway.metering import Outcome, RequestEstimate, Usage, UsageRecord
from gateway.policy.routes import Meter, Route
from gateway.relay import relay
from gateway.routing import NotAllowed
from gateway.target import BadTarget, request_target
from gateway.upstream import Upstream

log = logging.getLogger("gateway.proxy")

Scope = dict[str, Any]
UsageHook = Callable[[UsageRecord, Admission | None], Awaitable[None]]
AnswerHook = Callable[[Answer], None]

_ENCODING = frozenset({"accept-encoding"})


class Proxy:
    def __init__(
        self,
        upstream: Upstream,
        gate: Gate,
        hooks: Sequence[UsageHook],
        max_body_bytes: int,
        on_answer: AnswerHook | None = None,
    ) -> None:
        self.upstream = upstream
        self.gate = gate
        self.hooks = hooks
        self.max_body_bytes = max_body_bytes
        self.on_answer = on_answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        # Always the gateway's own id, never the client's x-request-id: reserves are
        # idempotent per id, so an id a client chose could replay a reservation for free.
        ex = Exchange(
            request_id=uuid.uuid4().hex,
            path=path,
            errors=error_format_for(path),
            started=time.perf_counter(),
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch_disconnect, receive, group.cancel_scope, ex)
                try:
                    await self._exchange(scope, receive, send, ex)
                except Exception:
                    log.exception("request failed request_id=%s", ex.request_id)
                    if not ex.response_started:
                        ex.outcome = Outcome.UPSTREAM_ERROR if ex.sent else Outcome.REFUSED
                        message = (
                            "The gateway failed on this request; its log has the details under "
                            f"request id {ex.request_id}."
                        )
                        kind = ErrorKind.API_ERROR
                        await self._refuse(send, ex, 500, kind, Reason.INTERNAL_ERROR, message)
                finally:
                    group.cancel_scope.cancel()
        finally:
            self._answered(ex)
            with anyio.CancelScope(shield=True):
                await self._finish(ex)

    def _answered(self, ex: Exchange) -> None:
        if self.on_answer is None:
            return
        answer = Answer(
            ex.status, ex.reason, ex.policy, ex.api, ex.outcome, time.perf_counter() - ex.started
        )
        try:
            self.on_answer(answer)
        except Exception:  # a metric must never fail a request
            log.exception("answer hook failed request_id=%s", ex.request_id)

    async def _watch_disconnect(
        self, receive: Receive, cancel_scope: anyio.CancelScope, ex: Exchange
    ) -> None:
        # Runs only after the body has been read whole, so every message now is a disconnect.
        await ex.body_read.wait()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not ex.response_done:  # after the last byte, a disconnect is just the end
                    ex.outcome = Outcome.CLIENT_GONE
                self.gate.leave(ex.request_id)  # admission is shielded; its hold is not
                cancel_scope.cancel()
                return

    async def _exchange(self, scope: Scope, receive: Receive, send: Send, ex: Exchange) -> None:
        try:
            ex.path, target = request_target(scope)
        except BadTarget as exc:
            kind, reason = ErrorKind.INVALID_REQUEST, Reason.BAD_REQUEST
            await self._refuse(send, ex, 400, kind, reason, str(exc))
            return
        route = await self._route(send, ex, scope["method"])
        if route is None:
            return
        try:
            caller = await self.gate.identify(scope, first_values(scope["headers"]))
        except ClientError as exc:
            await self._refuse(send, ex, exc.status, error_kind(exc), reason_of(exc), str(exc))
            return
        except Refused as refused:
            await self._refused(send, ex, refused, Reason.AUTHENTICATION_THROTTLED)
            return
        try:
            body = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            ex.outcome = Outcome.CLIENT_GONE
            return
        except BodyTooLarge as exc:
            kind = ErrorKind.REQUEST_TOO_LARGE
            await self._refuse(send, ex, exc.status, kind, Reason.TOO_LARGE, str(exc))
            return
        finally:
            ex.body_read.set()
        fmt = FORMATS.get(route.meter) if route.meter.metered else None
        injected = False
        extra_headers: list[tuple[bytes, bytes]] = []
        if fmt is not None or route.meter is Meter.REQUESTS_ONLY:
            try:
                body, injected = await self._admit(body, route, fmt, caller, ex)
            except ClientError as exc:
                reason = reason_of(exc)
                await self._refuse(send, ex, exc.status, error_kind(exc), reason, str(exc))
                return
            except StorageUnavailable as exc:
                retry = [(b"retry-after", str(max(1, round(exc.retry_after))).encode())]
                kind, reason = ErrorKind.OVERLOADED, reason_of(exc)
                await self._refuse(send, ex, 503, kind, reason, str(exc), retry)
                return
            except Refused as refused:
                ex.admission = refused.admission
                refusal = refused.admission.decision.refusal if refused.admission else None
                ex.policy = refusal.policy if refusal is not None else ""
                await self._refused(send, ex, refused, Reason.RATE_LIMIT)
                return
            extra_headers = self._limit_headers(ex)
        await self._forward(scope, send, ex, target, fmt, body, injected, extra_headers)

    async def _route(self, send: Send, ex: Exchange, method: str) -> Route | None:
        """The route this request takes, or None once it has been answered."""
        found = self.gate.routes().find(method, ex.path)
        if found is None:
            message = (
                f"No route {method} {ex.path} on this gateway; it forwards only the routes its "
                "policy set declares."
            )
            await self._refuse(send, ex, 404, ErrorKind.NOT_FOUND, Reason.NOT_FOUND, message)
            return None
        if isinstance(found, NotAllowed):
            allowed = ", ".join(found.allowed)
            message = f"{ex.path} accepts only {allowed}; {method} is not forwarded."
            headers = [(b"allow", allowed.encode())]
            kind, reason = ErrorKind.INVALID_REQUEST, Reason.METHOD_NOT_ALLOWED
            await self._refuse(send, ex, 405, kind, reason, message, headers)
            return None
        ex.errors = FAMILIES[found.errors]
        if not found.meter.forwarded or (found.meter.metered and found.meter not in FORMATS):
            message = (
                f"{method} {ex.path} is not forwarded: the gateway cannot see what it costs. "
                "An operator can allow it with a route whose meter is requests-only."
            )
            kind, reason = ErrorKind.PERMISSION, Reason.NOT_FORWARDED
            await self._refuse(send, ex, 403, kind, reason, message)
            return None
        return found

    async def _admit(
        self, body: bytes, route: Route, fmt: WireFormat | None, caller: Caller, ex: Exchange
    ) -> tuple[bytes, bool]:
        """Estimate, cap and reserve. ``fmt`` None: a requests-only route, one request and
        no tokens reserved, the body forwarded as it came."""
        prepared = (body, False)
        if fmt is None:
            ex.estimate = RequestEstimate(
                model="", input_tokens=0, max_output_tokens=0, stream=False
            )
        else:
            data = load_body(body)
            cap = route.default_max_output_tokens or 0
            try:
                ex.estimate = fmt.estimate(data, cap)
                prepared = fmt.prepare(data, body, cap)
            except UnicodeEncodeError:
                raise MalformedBody(
                    "The request body holds a lone surrogate escape (e.g. \\ud800), which is "
                    "not text; send valid Unicode."
                ) from None
            except RecursionError:
                raise MalformedBody(TOO_DEEP) from None
            ex.api = fmt.name
        # Shielded: once the store has debited, the admission must reach _finish even
        # if the client leaves meanwhile, or its reservation would be held until expiry.
        with anyio.CancelScope(shield=True):
            admission = await self.gate.admit(ex.request_id, caller, ex.estimate, ex.errors)
        ex.admission = admission
        capped = admission.decision.capped_output
        if fmt is not None and capped is not None:
            # Admitted with a lower output cap than asked (an ``action: cap`` policy): the
            # forwarded body asks for no more, and the reservation is that cap.
            lowered = fmt.with_cap(data, capped)
            changed = {key: value for key, value in lowered.items() if data.get(key) != value}
            prepared = fmt.prepare(lowered, rewritten(data, body, changed), capped)
            ex.estimate = replace(ex.estimate, max_output_tokens=capped)
        return prepared

    def _limit_headers(self, ex: Exchange) -> list[tuple[bytes, bytes]]:
        if ex.admission is None:
            return []
        pairs = ex.errors.rate_limit_headers(ex.admission.shown, time.time())
        capped = ex.admission.decision.capped_output
        if capped is not None:
            # The client asked for more output than its budget has left: say so, so that a
            # shorter answer (stop reason max_tokens) is not a mystery.
            pairs.append(("x-gateway-output-capped", str(capped)))
        if ex.admission.problem is not None:
            pairs.append(("link", help_link(ex.admission.problem)))
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        ex: Exchange,
        target: str,
        fmt: WireFormat | None,
        body: bytes,
        injected: bool,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> None:
        client_ip = scope["client"][0] if scope.get("client") else ""
        drop = self.gate.private_headers()
        if fmt is not None:
            # A compressed answer could not be metered as it passes: ask for plain bytes.
            drop |= _ENCODING
        headers = request_headers(scope["headers"], client_ip, drop=drop)
        if fmt is not None:
            headers.append(("accept-encoding", "identity"))
        await anyio.lowlevel.checkpoint()  # a client already gone stops here, nothing sent
        ex.sent = True
        try:
            response = await self.upstream.send(scope["method"], target, headers, body)
        except UpstreamError as exc:
            ex.sent = exc.sent
            ex.outcome = Outcome.UPSTREAM_ERROR if exc.sent else Outcome.UPSTREAM_UNREACHED
            kind = ErrorKind.TIMEOUT if exc.status == 504 else ErrorKind.API_ERROR
            log.warning("upstream failed request_id=%s: %s", ex.request_id, exc)
            await self._refuse(send, ex, exc.status, kind, reason_of(exc), upstream_sentence(exc))
            return
        try:
            await relay(send, ex, fmt, response, injected, [*extra_headers, _id_header(ex)])
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _refused(self, send: Send, ex: Exchange, refused: Refused, reason: Reason) -> None:
        message, headers, problem = refused.message, refused.headers, refused.problem_type
        kind = ErrorKind.RATE_LIMIT
        await self._refuse(send, ex, 429, kind, reason, message, headers, problem)

    async def _refuse(
        self,
        send: Send,
        ex: Exchange,
        status: int,
        kind: ErrorKind,
        reason: Reason,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        problem_type: str | None = None,
    ) -> None:
        ex.status, ex.reason = status, reason
        if ex.outcome is Outcome.COMPLETE:
            ex.outcome = Outcome.REFUSED
        body = ex.errors.error_body(status, kind, message, problem_type)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    _id_header(ex),
                    *headers,
                ],
            }
        )
        ex.response_done = True
        await send({"type": "http.response.body", "body": body})

    async def _finish(self, ex: Exchange) -> None:
        if ex.estimate is None:
            return  # not a metered exchange: nothing was reserved, nothing to record
        if ex.status == 0 or ex.outcome is Outcome.UPSTREAM_ERROR:
            # No answer came. What was never sent costs nothing; what was sent may have been
            # read, so its input stays charged, and a detached request (a batch, a background
            # response) runs on upstream without us: it is charged in full.
            estimate = ex.estimate
            if not ex.sent:
                ex.usage = Usage()
            elif estimate.detached:
                ex.usage = Usage(estimate.input_tokens, estimate.max_output_tokens)
            else:
                ex.usage = Usage(input_tokens=estimate.input_tokens)
            ex.usage_reported = not ex.sent
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


def _id_header(ex: Exchange) -> tuple[bytes, bytes]:
    # On every answer, so that a client can quote the id its logs and the decision log hold.
    return (b"x-request-id", ex.request_id.encode("ascii"))


__all__ = ["Proxy", "read_body"]
