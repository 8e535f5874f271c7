"""Who is asking: account, organization, attributes and linking signals, from trusted sources only.

Identity headers are believed only from peers in ``identity.trusted_sources`` (the edge
that authenticated the caller); from anyone else they are refused, never ignored, so a
misrouted client learns why. In API-key mode the key itself is the identity: it is hashed
with SHA-256 and looked up in the registry; the clear key is never stored or logged.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import limits
import limits.aio.storage
import limits.aio.strategies

from gateway.budget.decision import Subject
from gateway.errors import Unauthenticated
from gateway.policy.model import IdentityConfig, LinkSignal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Caller:
    subject: Subject
    client_ip: str
    signals: tuple[tuple[str, str], ...] = ()  # (signal name, hashed value)


MAX_ID_CHARS = 256  # an account or organization id from the edge


def hash_value(kind: str, value: str) -> str:
    """A signal value or key as stored: SHA-256 hex, never the clear value."""
    return hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def peer_address(scope: Mapping[str, object]) -> IPAddress | None:
    client = scope.get("client")
    if not isinstance(client, (tuple, list)) or not client:
        return None
    try:
        return ipaddress.ip_address(str(client[0]))
    except ValueError:
        return None


def is_trusted(config: IdentityConfig, peer: IPAddress | None) -> bool:
    return peer is not None and any(peer in network for network in config.trusted_sources)


def client_address(headers: Mapping[str, str], peer: IPAddress | None, trusted: bool) -> str:
    """The caller's address: the last x-forwarded-for hop when the peer is a trusted edge."""
    if trusted and (forwarded := _forwarded_for(headers)):
        return forwarded
    return "" if peer is None else str(peer)


def throttle_key(
    config: IdentityConfig, headers: Mapping[str, str], peer: IPAddress | None
) -> str | None:
    """The address failed authentications are counted against, or None when there is no
    address of the caller's own: a trusted edge that sends no x-forwarded-for would put
    every caller behind it on the edge's address, and 30 bad keys would lock them all out.
    (Such an edge must throttle key guessing itself; docs/security.md says so.)"""
    trusted = is_trusted(config, peer)
    if trusted and not _forwarded_for(headers):
        return None
    address = client_address(headers, peer, trusted)
    return address or None


def _forwarded_for(headers: Mapping[str, str]) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if not forwarded:
        return None
    last = forwarded.split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


def identify(
    config: IdentityConfig,
    scope: Mapping[str, object],
    headers: Mapping[str, str],
    link_by: tuple[LinkSignal, ...] = (),
) -> Caller:
    """The caller of one request, from its headers alone (the model comes later, from the
    body), or Unauthenticated with a sentence saying what is missing."""
    peer = peer_address(scope)
    trusted = is_trusted(config, peer)
    ip = client_address(headers, peer, trusted)
    attributes: dict[str, str] = {}
    _refuse_repeats(config, headers, link_by)
    if config.api_keys:
        subject = _from_api_key(config, headers, attributes)
    else:
        subject = _from_headers(config, headers, attributes, trusted)
    signals = tuple(
        (signal.name, hash_value(signal.name, value))
        for signal in link_by
        if (value := signal_value(signal, headers, ip, trusted))
    )
    return Caller(subject=subject, client_ip=ip, signals=signals)


def _refuse_repeats(
    config: IdentityConfig, headers: Mapping[str, str], link_by: tuple[LinkSignal, ...]
) -> None:
    """An identity, attribute or signal header sent twice is refused, never joined: joined,
    ``tier: pro, free`` would match no tier's policy, and two fingerprints would link no one.
    (An edge must set these headers, replacing what a client sent.)"""
    repeated: frozenset[str] = getattr(headers, "repeated", frozenset())
    if not repeated:
        return
    names = [config.account_header, config.organization_header, "x-api-key", "authorization"]
    names += config.attribute_headers.values()
    names += [signal.header for signal in link_by if signal.header is not None]
    for name in names:
        if name and name.lower() in repeated:
            raise Unauthenticated(
                f"The {name} header came more than once; the edge must send exactly one value."
            )


def _from_headers(
    config: IdentityConfig, headers: Mapping[str, str], attributes: dict[str, str], trusted: bool
) -> Subject:
    account = headers.get(config.account_header)
    if not trusted:
        if account is not None or headers.get(config.organization_header) is not None:
            raise Unauthenticated(
                "Identity headers are accepted only from the trusted edge; "
                "send this request through it."
            )
        raise Unauthenticated(
            f"No account: send the request through the trusted edge, which sets "
            f"{config.account_header}."
        )
    if not account:
        raise Unauthenticated(f"No account: the {config.account_header} header is missing.")
    for header in (config.account_header, config.organization_header):
        if header and "," in headers.get(header, ""):
            raise Unauthenticated(
                f"The {header} header came more than once (or with a comma); the edge must "
                "send exactly one value."
            )
        if header and len(headers.get(header, "")) > MAX_ID_CHARS:
            # Ids are kept per replica (behaviour, top spenders) and in counter keys: a
            # 60 KB id would make every bounded table hold megabytes.
            raise Unauthenticated(
                f"The {header} header is longer than {MAX_ID_CHARS} characters; the edge "
                "must send a shorter id."
            )
    for name, header in config.attribute_headers.items():
        if (value := headers.get(header)) is not None:
            attributes.setdefault(name, value)
    organization = headers.get(config.organization_header) or None
    return Subject(account=account, organization=organization, attributes=attributes)


def _from_api_key(
    config: IdentityConfig, headers: Mapping[str, str], attributes: dict[str, str]
) -> Subject:
    key = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    if key is not None and bearer is not None and bearer != key:
        # Both reach the upstream, which may read the other one: metered one key, served
        # by another's account.
        raise Unauthenticated(
            "Send one API key: x-api-key and Authorization: Bearer carry different keys."
        )
    key = key if key is not None else bearer
    if not key:
        raise Unauthenticated("No API key: send it as x-api-key or Authorization: Bearer.")
    entry = config.api_keys.get(api_key_hash(key))
    if entry is None:
        raise Unauthenticated("Unknown API key: check the key, or ask for one to be registered.")
    for name, value in entry.attributes.items():
        attributes.setdefault(name, value)
    return Subject(account=entry.account, organization=entry.organization, attributes=attributes)


def signal_value(
    signal: LinkSignal, headers: Mapping[str, str], client_ip: str, trusted: bool
) -> str | None:
    """The raw value a linking signal takes for this request (hashed before it goes anywhere)."""
    if signal.header is not None:
        # Only the trusted edge may set linking headers; from anyone else they could frame others.
        return headers.get(signal.header.lower()) if trusted else None
    if not client_ip:
        return None
    address = ipaddress.ip_address(client_ip)
    prefix = signal.ipv4_prefix if address.version == 4 else signal.ipv6_prefix
    if prefix is None:
        return None
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class AuthFailures:
    """Per-client-address limit on failed authentication, so key guessing is slowed at once.

    This is where the ``limits`` package fits well: one process-local counter per address,
    no atomicity across scopes needed, and a lost count on restart costs nothing.
    """

    def __init__(self, per_minute: int = 30) -> None:
        self._item = limits.RateLimitItemPerMinute(per_minute)
        self._limiter = limits.aio.strategies.MovingWindowRateLimiter(
            limits.aio.storage.MemoryStorage()
        )

    async def blocked(self, client_ip: str) -> bool:
        return not await self._limiter.test(self._item, client_ip)

    async def record(self, client_ip: str) -> None:
        await self._limiter.hit(self._item, client_ip)
