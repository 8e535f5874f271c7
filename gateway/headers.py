"""Header rewriting at the proxy boundary: hop-by-hop headers out, forwarding headers in."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 §7.6.1; these describe one connection, not the message.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(token.strip().lower() for token in value.split(","))
    return tokens


def request_headers(
    raw: Iterable[tuple[bytes, bytes]], client_ip: str, drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """Client headers as forwarded upstream: no hop-by-hop, no Host, x-forwarded-for appended.

    ``content-length`` is dropped too: the upstream client sets it from the body it sends,
    which the gateway may have rewritten (OpenAI ``stream_options``).
    """
    decoded = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]
    skip = HOP_BY_HOP | _connection_tokens(decoded) | drop | {"host", "content-length"}
    forwarded: list[tuple[str, str]] = []
    prior_xff: list[str] = []
    for name, value in decoded:
        if name == "x-forwarded-for":
            prior_xff.append(value)
        elif name not in skip:
            forwarded.append((name, value))
    if client_ip:
        prior_xff.append(client_ip)
    if prior_xff:
        forwarded.append(("x-forwarded-for", ", ".join(prior_xff)))
    return forwarded


def response_headers(
    raw: Iterable[tuple[bytes, bytes]], drop_length: bool, drop: frozenset[str] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """Upstream headers as sent to the client: repeated ones kept, hop-by-hop ones and
    ``drop`` (lower-case names) dropped."""
    items = list(raw)
    tokens = _connection_tokens(
        (n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in items
    )
    skip = HOP_BY_HOP | tokens | drop
    if drop_length:
        skip = skip | {"content-length"}
    return [(name, value) for name, value in items if name.decode("latin-1").lower() not in skip]


class HeaderValues(dict[str, str]):
    """Lower-cased name → value; ``repeated`` names the headers that came more than once."""

    repeated: frozenset[str] = frozenset()


def first_values(raw: Iterable[tuple[bytes, bytes]]) -> HeaderValues:
    """Lower-cased name → value, for reading identity and signal headers. A repeated header's
    lines are joined with ", " (RFC 9110 §5.3), so an edge that appends its own
    x-forwarded-for line is still the last hop, and a repeated identity header is seen."""
    values = HeaderValues()
    repeated: set[str] = set()
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in values:
            values[key] = f"{values[key]}, {text}"
            repeated.add(key)
        else:
            values[key] = text
    if repeated:
        values.repeated = frozenset(repeated)
    return values
