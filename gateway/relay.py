"""The answer's way back: relayed as it comes, metered as it passes.

A stream goes through its format's meter (which forwards every byte it is given, less a
usage chunk the gateway asked for itself); a JSON answer is copied (up to
``MAX_METERED_JSON``) and read at the end; an encoded answer is relayed untouched and charged
its reservation. Whatever ends the relay, the exchange's usage is set before the last byte.

A stream whose output would pass what the admission reserved (an upstream that ignored the
cap it was sent) is cut there: the upstream connection is closed, the client gets the
ending its API gives an answer that reached its cap, and the exchange is charged what was
delivered (``Outcome.CUT_AT_CAP``). A JSON answer arrives whole: it is charged its usage.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.apis import WireFormat
from gateway.errors import UpstreamError
from gateway.exchange import Exchange, Send
from gateway.headers import response_headers
from gateway.metering import Outcome, Usage

log = logging.getLogger("gateway.proxy")

# A non-streamed body is copied for metering up to this size; past it, the usage cannot be
# read and the reservation is charged.
MAX_METERED_JSON = 8 * 1024 * 1024
_ID = b"x-request-id"


async def relay(
    send: Send,
    ex: Exchange,
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
    encoded = any(
        n.lower() == b"content-encoding" and v.strip().lower() not in (b"", b"identity")
        for n, v in response.headers
    )
    if encoded:
        # Compressed despite accept-encoding: identity. Relayed as it came; unreadable,
        # so charged its reservation (no meter, no copy).
        fmt = None
    meter = None
    if fmt is not None and streamed:
        meter = fmt.stream_meter(injected, _output_limit(ex))
    # The gateway's own rate-limit headers replace the upstream's of the same names.
    ours = frozenset(name.decode("latin-1") for name, _ in extra_headers)
    headers = response_headers(
        response.headers, drop_length=meter is not None and injected, drop=ours
    )
    # OpenAI names its own id x-request-id, which the gateway's replaces: kept under another
    # name, since the provider's support asks for it.
    headers += [(b"x-upstream-request-id", v) for n, v in response.headers if n.lower() == _ID]
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
            if copy is not None and len(copy) < MAX_METERED_JSON:
                copy += chunk
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            if meter is not None and meter.cut:
                break  # the proxy closes the upstream response, and so its connection
        if meter is not None and (tail := meter.flush()):
            await send({"type": "http.response.body", "body": tail, "more_body": True})
    except UpstreamError as exc:
        ex.outcome = Outcome.UPSTREAM_BROKE
        log.warning("upstream stream broke request_id=%s: %s", ex.request_id, exc)
    finally:
        if fmt is not None:
            _meter_result(ex, fmt, meter, copy)
        elif encoded and ex.estimate is not None and 200 <= ex.status < 300:
            ex.usage = Usage(ex.estimate.input_tokens, ex.estimate.max_output_tokens)
            ex.usage_reported = False
    if meter is not None and meter.cut:
        ex.outcome = Outcome.CUT_AT_CAP
        log.warning(
            "stream cut at its output cap request_id=%s reserved_output=%d charged_output=%d",
            ex.request_id,
            _output_limit(ex) or 0,
            ex.usage.output_tokens,
        )
        await send(
            {"type": "http.response.body", "body": meter.ending(ex.usage), "more_body": True}
        )
    ex.response_done = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _output_limit(ex: Exchange) -> int | None:
    """The output a stream may deliver: what the admission reserved. None for a background
    response, which runs on upstream whatever its stream does and is charged its cap."""
    estimate = ex.estimate
    if estimate is None or estimate.detached:
        return None
    return estimate.max_output_tokens


def _meter_result(ex: Exchange, fmt: WireFormat, meter: Any, copy: bytearray | None) -> None:
    if not 200 <= ex.status < 300:
        # An error or a redirect (never followed) generated nothing.
        ex.usage, ex.usage_reported = Usage(), True
        return
    if meter is not None:
        usage, reported = meter.result()
    else:
        parsed = fmt.usage_from_json(bytes(copy or b""))
        if parsed is None and ex.estimate is not None:
            # An answer that says nothing of usage (a batch submitted, a background
            # response, a server that does not report) is charged its reservation.
            ex.usage = Usage(ex.estimate.input_tokens, ex.estimate.max_output_tokens)
            ex.usage_reported = False
            return
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
