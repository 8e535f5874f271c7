"""The policy file format as pydantic models: structure and field values only.

Every model forbids unknown keys and is strict: YAML guesses types (``true``, ``1.0``,
``2024-01-01``), and a policy should mean exactly what it says, so nothing is coerced.
Checks that need several fields or files (duplicate names, match keys without a source,
scopes without a source) live in ``gateway.policy.rules`` and run once these pass.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)

from gateway.behaviour import ATTRIBUTES as BEHAVIOUR_ATTRIBUTES
from gateway.policy.amounts import parse_limit, show
from gateway.policy.model import Limit, Metric

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 token: a legal header name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # names end up in storage keys and labels
_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _version(value: object) -> int:
    if type(value) is not int or value != 1:
        raise ValueError(f"{show(value)} is not a supported version; write version: 1")
    return value


def _header(value: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not a header name")
    return value.lower()  # ASGI hands headers over lower-cased


def _optional_header(value: str | None) -> str | None:
    return None if value is None or value == "" else _header(value)


def _name(value: str) -> str:
    if _NAME.fullmatch(value) is None:
        raise ValueError(
            f"{show(value)} is not a valid name; use up to 100 letters, digits, '.', '_' or '-'"
        )
    return value


def _attribute(value: str) -> str:
    if _ATTRIBUTE.fullmatch(value) is None:
        raise ValueError(f"{show(value)} is not an attribute name; use a-z, 0-9 and _")
    if value == "model":
        raise ValueError("'model' is reserved for the requested model; choose another name")
    if value in BEHAVIOUR_ATTRIBUTES:
        raise ValueError(
            f"{value!r} is reserved for the gateway's behaviour verdict; choose another name"
        )
    return value


def _not_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _network(value: object) -> Network:
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a network; write it like 10.0.0.0/8 or ::1/128")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        wider = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not a network; write it like 10.0.0.0/8 or ::1/128"
        ) from None
    raise ValueError(f"{show(value)} has host bits set; did you mean {wider}?")


def _sha256(value: str) -> str:
    if _SHA256.fullmatch(value) is None:
        raise ValueError(
            f"{show(value)} is not a SHA-256 hex digest (64 hex digits); "
            "store hash_api_key(key), never the key itself"
        )
    return value.lower()


def _as_list(value: object) -> object:
    return value if isinstance(value, list) else [value]


def _distinct_units(limits: list[Limit]) -> list[Limit]:
    units = [limit.unit for limit in limits]
    for unit in units:
        if unit is not None and units.count(unit) > 1:
            raise ValueError(f"two limits per {unit.value}; keep one (the smaller one binds)")
    return limits


Header = Annotated[str, AfterValidator(_header)]
Name = Annotated[str, AfterValidator(_name)]
Id = Annotated[str, AfterValidator(_not_empty)]

# One alias per metric: the parser must know which metric it is reading.
RequestsLimit = Annotated[Limit, PlainValidator(lambda v: parse_limit(Metric.REQUESTS, v))]
TokensLimit = Annotated[Limit, PlainValidator(lambda v: parse_limit(Metric.TOKENS, v))]
InputLimit = Annotated[Limit, PlainValidator(lambda v: parse_limit(Metric.INPUT_TOKENS, v))]
OutputLimit = Annotated[Limit, PlainValidator(lambda v: parse_limit(Metric.OUTPUT_TOKENS, v))]
ConcurrentLimit = Annotated[
    Limit | None, PlainValidator(lambda v: parse_limit(Metric.CONCURRENT, v))
]

_listed = BeforeValidator(_as_list)  # a single limit may be written without brackets
_distinct = AfterValidator(_distinct_units)
RequestsLimits = Annotated[list[RequestsLimit], _listed, Field(min_length=1), _distinct]
TokensLimits = Annotated[list[TokensLimit], _listed, Field(min_length=1), _distinct]
InputLimits = Annotated[list[InputLimit], _listed, Field(min_length=1), _distinct]
OutputLimits = Annotated[list[OutputLimit], _listed, Field(min_length=1), _distinct]


class LimitsSchema(Strict):
    """A single string or a list of them per metric; ``concurrent`` takes one integer."""

    requests: RequestsLimits = Field(default_factory=list)
    tokens: TokensLimits = Field(default_factory=list)
    input_tokens: InputLimits = Field(default_factory=list)
    output_tokens: OutputLimits = Field(default_factory=list)
    concurrent: ConcurrentLimit = None

    @model_validator(mode="after")
    def _some_limit(self) -> LimitsSchema:
        if not self.all():
            raise ValueError(
                "no limits; give at least one of requests, tokens, input_tokens, "
                "output_tokens or concurrent"
            )
        return self

    def all(self) -> tuple[Limit, ...]:
        rates = (*self.requests, *self.tokens, *self.input_tokens, *self.output_tokens)
        return rates if self.concurrent is None else (*rates, self.concurrent)


_URI = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")  # RFC 3986; no <, >, " or space
_SENTENCE_END = re.compile(r"[.!?]\s")


def _problem_type(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or _URI.fullmatch(value) is None:
        raise ValueError(
            f"{show(value)} is not an absolute https URI; write it like "
            "https://example.com/problems/verify-account"
        )
    return value


def _detail(value: str) -> str:
    if not value.isprintable() or value[-1:] not in (".", "!", "?"):
        raise ValueError("write one sentence on one line, ending with '.', '!' or '?'")
    if _SENTENCE_END.search(value) is not None:
        raise ValueError("write one sentence: the message it ends must stay short")
    return value


class ProblemSchema(Strict):
    """RFC 9457's ``type`` and ``detail``, shown to a client this policy refuses."""

    type: Annotated[str, Field(max_length=500), AfterValidator(_problem_type)]
    detail: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_detail)]


class PolicySchema(Strict):
    name: Name
    scope: Literal["account", "organization", "cluster"]
    match: dict[str, str] = Field(default_factory=dict)
    mode: Literal["enforce", "shadow"] = "enforce"
    on_storage_error: Literal["open", "closed"] = "open"
    limits: LimitsSchema
    overrides: dict[Id, LimitsSchema] = Field(default_factory=dict)
    min_organizations: int | None = Field(None, ge=2)  # scope cluster only (rules.py)
    action: Literal["refuse", "cap", "slow"] = "refuse"
    min_output_tokens: int | None = Field(None, ge=1)  # action cap only (rules.py)
    scale_by: Annotated[str, AfterValidator(_attribute)] | None = None
    scale_exponent: float | None = Field(None, gt=0, le=1)  # with scale_by only (rules.py)
    max_delay: float | None = Field(None, ge=1, le=60)  # action slow only (action_rules.py)
    problem: ProblemSchema | None = None


class ApiKeysSchema(Strict):
    file: Id


class IdentitySchema(Strict):
    account_header: Header = "x-account-id"
    # null or "" turns organization headers off (organizations then come from API keys only)
    organization_header: Annotated[str | None, AfterValidator(_optional_header)] = (
        "x-organization-id"
    )
    attribute_headers: dict[Annotated[str, AfterValidator(_attribute)], Header] = Field(
        default_factory=dict
    )
    trusted_sources: list[Annotated[Network, PlainValidator(_network)]] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.1/32"),
            ipaddress.ip_network("::1/128"),
        ]
    )
    # Networks wider than an edge (0.0.0.0/0, a /4) are refused without it (rules.py).
    trust_any_source: bool = False
    api_keys: ApiKeysSchema | None = None


class ClientIpSchema(Strict):
    ipv4_prefix: int = Field(32, ge=1, le=32)
    ipv6_prefix: int = Field(64, ge=1, le=128)  # a /64 is usually one subscriber's network


class LinkSignalSchema(Strict):
    header: Header | None = None
    client_ip: ClientIpSchema | None = None
    max_accounts: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _one_source(self) -> LinkSignalSchema:
        if (self.header is None) == (self.client_ip is None):
            raise ValueError("give exactly one of header or client_ip")
        return self


class ExemptSchema(Strict):
    organizations: list[Id] = Field(default_factory=list)
    attribute: dict[str, str] | None = Field(None, min_length=1, max_length=1)


class ClustersSchema(Strict):
    links: dict[Id, Annotated[list[Id], Field(min_length=2)]] = Field(default_factory=dict)
    link_by: list[LinkSignalSchema] = Field(default_factory=list)
    disclose: bool = False
    exempt: ExemptSchema | None = None


_SEGMENT = re.compile(r"[A-Za-z0-9._~:@!$&'()*+,=-]+|\{[a-z_]+\}")


def _route_path(value: str) -> str:
    segments = value.split("/")
    if (
        not value.startswith("/")
        or any(segment in ("", ".", "..") for segment in segments[1:])
        or not all(_SEGMENT.fullmatch(segment) for segment in segments[1:])
    ):
        raise ValueError(
            f"{show(value)} is not a route path; write it like /v1/messages or "
            "/v1/models/{id} (no empty, '.' or '..' segments, no '%', ';', '?' or '#')"
        )
    return value


class RouteSchema(Strict):
    path: Annotated[str, AfterValidator(_route_path)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    meter: Literal[
        "anthropic-messages",
        "anthropic-message-batches",
        "anthropic-complete",
        "openai-chat-completions",
        "openai-responses",
        "openai-completions",
        "openai-embeddings",
        "pass-through",
        "requests-only",
        "blocked",
        "off",
    ]
    errors: Literal["anthropic", "openai"] | None = None
    default_max_output_tokens: int | None = Field(None, ge=1)


class PolicyFileSchema(Strict):
    version: Annotated[int, PlainValidator(_version)]
    identity: IdentitySchema | None = None
    routes: list[RouteSchema] | None = None
    policies: list[PolicySchema] = Field(default_factory=list)
    clusters: ClustersSchema | None = None


class ApiKeySchema(Strict):
    key_sha256: Annotated[str, AfterValidator(_sha256)]
    account: Id
    organization: Id | None = None
    attributes: dict[Annotated[str, AfterValidator(_attribute)], str] = Field(default_factory=dict)


class KeyRegistrySchema(Strict):
    keys: list[ApiKeySchema]
