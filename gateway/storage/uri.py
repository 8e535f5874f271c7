"""Store URIs as error messages show them and as host lists read them, for every scheme."""

from __future__ import annotations

import re
from urllib.parse import SplitResult

from gateway.errors import ConfigError

_SECRET_PARAMETER = re.compile(r"((?:^|[?&])[a-z_]*password=)[^&]*")


def masked(uri: str) -> str:
    """The URI with its passwords replaced by ``***``: messages and logs never hold them."""
    scheme, sep, rest = uri.partition("://")
    if sep:
        location, slash, tail = rest.partition("/")
        user_info, at, hosts = location.rpartition("@")
        user, colon, password = user_info.partition(":")
        if at and colon and password:
            location = f"{user}:***@{hosts}"
        rest = location + slash + tail
    return _SECRET_PARAMETER.sub(r"\1***", scheme + sep + rest)


def host_ports(parts: SplitResult, uri: str, what: str) -> list[tuple[str, int]]:
    """The ``h1:p1,h2:p2`` list after any credentials (cluster nodes, sentinels)."""
    found = []
    for spec in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = spec.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{what} {spec!r} in {masked(uri)!r} is not host:port.")
        found.append((host, int(port)))
    return found
