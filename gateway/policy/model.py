"""The compiled policy set: what the budget engine and the identity layer read.

Loading (``gateway.policy.loader``) turns YAML into these frozen values; nothing
here knows YAML, pydantic or storage.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway.policy.routes import SHIPPED_ROUTES, Route


class Metric(enum.StrEnum):
    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"  # input + cache creation; cache reads don't count
    OUTPUT_TOKENS = "output_tokens"
    TOKENS = "tokens"  # input_tokens + output_tokens
    CONCURRENT = "concurrent"  # requests in flight


class Unit(enum.StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    @property
    def calendar(self) -> bool:
        """Day and month are calendar windows in UTC; the others are rolling token buckets."""
        return self in (Unit.DAY, Unit.MONTH)

    @property
    def seconds(self) -> int:
        """The window's length; for ``month`` a nominal 30 days (used only for refill rates)."""
        return _UNIT_SECONDS[self]


_UNIT_SECONDS = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.MONTH: 30 * 86400,
}


class Scope(enum.StrEnum):
    ACCOUNT = "account"
    ORGANIZATION = "organization"
    CLUSTER = "cluster"


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    SHADOW = "shadow"


MAX_SCALE = 1_000_000  # no attribute multiplies a limit more than this
CLUSTER_ACCOUNTS = "cluster_accounts"  # scale_by: the accounts of the subject's cluster


class Action(enum.StrEnum):
    """What a policy does with a request that does not fit it."""

    REFUSE = "refuse"  # 429
    CAP = "cap"  # admit with a lower output cap, when that fits (else refuse)
    SLOW = "slow"  # hold the request until it fits, up to max_delay (else refuse)


MAX_DELAY = 60.0  # seconds action slow may hold a request, at most


@dataclass(frozen=True, slots=True)
class RefusalProblem:
    """What a refusal by the policy points the client to (RFC 9457's ``type`` and
    ``detail``): a page saying how to get out of this limit, and one sentence about it."""

    type: str  # an absolute https URI
    detail: str


class OnStorageError(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit on one metric: ``amount`` per ``unit`` (``unit`` is None for ``concurrent``)."""

    metric: Metric
    amount: int
    unit: Unit | None

    @property
    def text(self) -> str:
        if self.unit is None:
            return f"{self.amount}"
        return f"{self.amount}/{self.unit.value}"

    @property
    def window_name(self) -> str:
        """A short stable name for the window, used in storage keys (never the amount)."""
        return "inflight" if self.unit is None else self.unit.value


def replace_metrics(base: tuple[Limit, ...], replacement: tuple[Limit, ...]) -> tuple[Limit, ...]:
    """``base`` with every limit on a metric named in ``replacement`` replaced by those limits."""
    replaced = {limit.metric for limit in replacement}
    return tuple(limit for limit in base if limit.metric not in replaced) + replacement


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    scope: Scope
    limits: tuple[Limit, ...]
    match: tuple[tuple[str, str], ...] = ()
    mode: Mode = Mode.ENFORCE
    on_storage_error: OnStorageError = OnStorageError.OPEN
    overrides: Mapping[str, tuple[Limit, ...]] = field(default_factory=dict)
    # Cluster scope only: the policy applies to clusters whose accounts span at least this
    # many organizations (1: every cluster, and every policy of another scope).
    min_organizations: int = 1
    action: Action = Action.REFUSE
    # With action cap: the smallest output cap worth admitting; below it, refuse.
    min_output_tokens: int = 256
    # What every limit is multiplied by: an attribute's number (e.g. verified seats, from
    # the edge), or ``cluster_accounts``, the accounts of the subject's cluster; raised to
    # ``scale_exponent`` (below 1: grows slower than the count, so 50 linked accounts do
    # not get 50 allowances).
    scale_by: str | None = None
    scale_exponent: float = 1.0
    # With action slow: the longest a request is held for room before it is refused.
    max_delay: float = 10.0
    problem: RefusalProblem | None = None  # shown with the policy's refusals (and caps)

    def factor(self, attributes: Mapping[str, str], cluster_accounts: int = 1) -> float:
        """What the limits are multiplied by: the count's ``scale_exponent`` power, the
        count 1 to MAX_SCALE (1 when the attribute is missing or not a number)."""
        if self.scale_by is None:
            return 1.0
        if self.scale_by == CLUSTER_ACCOUNTS:
            count = cluster_accounts
        else:
            raw = attributes.get(self.scale_by, "")
            count = int(raw) if raw.isdigit() else 1
        factor: float = float(min(MAX_SCALE, max(1, count))) ** self.scale_exponent
        return factor

    def applies(self, attributes: Mapping[str, str]) -> bool:
        """Every ``match`` key must be present and match its glob."""
        for key, pattern in self.match:
            value = attributes.get(key)
            if value is None or not fnmatchcase(value, pattern):
                return False
        return True

    def limits_for(self, scope_id: str) -> tuple[Limit, ...]:
        override = self.overrides.get(scope_id)
        if override is None:
            return self.limits
        return replace_metrics(self.limits, override)


@dataclass(frozen=True, slots=True)
class ApiKeyEntry:
    """Who an API key speaks for; the registry is keyed by the key's SHA-256 hex, never the key."""

    account: str
    organization: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    account_header: str = "x-account-id"
    organization_header: str = "x-organization-id"
    attribute_headers: Mapping[str, str] = field(default_factory=dict)
    trusted_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    api_keys_file: str | None = None  # resolved path of the key registry file, if any
    api_keys: Mapping[str, ApiKeyEntry] = field(default_factory=dict)  # sha256 hex → entry


@dataclass(frozen=True, slots=True)
class LinkSignal:
    """One automatic linking signal: a header's value, or the client address by prefix."""

    header: str | None = None
    ipv4_prefix: int | None = None
    ipv6_prefix: int | None = None
    max_accounts: int | None = None

    @property
    def name(self) -> str:
        if self.header is not None:
            return f"header:{self.header.lower()}"
        return f"client_ip:{self.ipv4_prefix}:{self.ipv6_prefix}"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    links: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    link_by: tuple[LinkSignal, ...] = ()
    disclose: bool = False
    exempt_organizations: tuple[str, ...] = ()
    exempt_attribute: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A whole, checked set of policy files. ``version`` is a hash of their bytes."""

    version: str
    sources: tuple[str, ...]
    identity: IdentityConfig
    policies: tuple[Policy, ...]
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    routes: tuple[Route, ...] = SHIPPED_ROUTES  # the shipped table merged with the files' own
