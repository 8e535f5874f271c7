"""The request target, canonical: exactly the path that is matched, metered and forwarded.

An upstream and the gateway must never read one request line two ways. A ``#`` that the
gateway keeps in its path but the upstream's URL library drops as a fragment, a ``;``
parameter, a backslash, an encoded ``/`` or a dot segment that the upstream resolves: each
would let the gateway meter one route while the model API serves another. So the raw
target is read byte for byte (``scope["raw_path"]``, never the server's decoded ``path``),
escapes of harmless characters are decoded, and anything else that could be read two ways
is refused with a sentence. The result contains only characters that mean the same to
every reader, and it is what the upstream receives.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from gateway.errors import ClientError

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# RFC 3986 pchar, less ';' (a parameter to some servers) and '%' (handled as escapes).
_SEGMENT_CHARS = _UNRESERVED | frozenset("!$&'()*+,=:@")
_PATH_BYTES = _SEGMENT_CHARS | {"/", "%"}
_HEX = frozenset(string.hexdigits)
# A query is the upstream's to read; these bytes could still end or split the target.
_QUERY_FORBIDDEN = frozenset(range(0x21)) | {0x23, 0x7F} | frozenset(range(0x80, 0x100))


# Most targets are plain segments of safe characters: read at C speed, no escape to decode.
_PLAIN = re.compile(rb"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]+)+")


class BadTarget(ClientError):
    """A request target that could be read two ways → 400."""

    status = 400


def canonical_path(raw: bytes) -> str:
    """The path as matched and forwarded, or BadTarget saying what to send instead."""
    if _PLAIN.fullmatch(raw) and b"/./" not in raw + b"/" and b"/../" not in raw + b"/":
        return raw.decode("ascii")
    if not raw.startswith(b"/"):
        raise BadTarget("The request target must be a path starting with '/', e.g. /v1/messages.")
    text = raw.decode("latin-1")
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            escape = text[i + 1 : i + 3]
            if len(escape) < 2 or not set(escape) <= _HEX:
                raise BadTarget(f"The path has a broken percent-escape at {text[i : i + 3]!r}.")
            decoded = chr(int(escape, 16))
            if decoded not in _SEGMENT_CHARS:
                raise BadTarget(
                    f"The path encodes {_name(decoded)} as %{escape.upper()}; the gateway "
                    "forwards only paths that every server reads the same way."
                )
            out.append(decoded)
            i += 3
            continue
        if char not in _PATH_BYTES:
            raise BadTarget(
                f"The path holds {_name(char)}, which servers read differently; send the plain "
                "path, e.g. /v1/messages."
            )
        out.append(char)
        i += 1
    path = "".join(out)
    segments = path.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        raise BadTarget(
            "The path has an empty, '.' or '..' segment; send it normalized, e.g. /v1/messages."
        )
    return path


def canonical_query(raw: bytes) -> str:
    """The query string as forwarded: left to the upstream, but never one that could end
    the target early or be split on the way."""
    if any(byte in _QUERY_FORBIDDEN for byte in raw):
        raise BadTarget(
            "The query string holds a space, '#', a control or a non-ASCII byte; percent-encode it."
        )
    return raw.decode("ascii")


def request_target(scope: Mapping[str, Any]) -> tuple[str, str]:
    """(path, target) of an ASGI HTTP scope: the canonical path, and the path with its
    query as it is forwarded."""
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes):  # a server that gives no raw path: its decoded one
        raw = str(scope["path"]).encode("utf-8")
    path = canonical_path(raw)
    query = canonical_query(scope.get("query_string") or b"")
    return path, f"{path}?{query}" if query else path


def _name(char: str) -> str:
    names = {
        "#": "a '#' (a fragment)",
        ";": "a ';' (a parameter)",
        "\\": "a backslash",
        "/": "a '/'",
        "?": "a '?'",
        "%": "a '%'",
        " ": "a space",
    }
    if char in names:
        return names[char]
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"a control byte (0x{ord(char):02X})"
    if ord(char) >= 0x80:
        return "a non-ASCII byte"
    return f"{char!r}"
