"""Checks across fields and files, run once every file has passed the schema.

Each rule answers one question an operator would otherwise learn about from a refused (or
wrongly admitted) request: is a name used twice, does a match key or a scope have anything to
read from, do two files both claim ``identity`` or ``clusters``, could a client forge what the
identity and link headers say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.behaviour import ATTRIBUTES as BEHAVIOUR_ATTRIBUTES
from gateway.headers import HOP_BY_HOP
from gateway.policy.keys import read_registry
from gateway.policy.model import ApiKeyEntry
from gateway.policy.route_rules import check_routes
from gateway.policy.schema import (
    ClustersSchema,
    IdentitySchema,
    Network,
    PolicyFileSchema,
    PolicySchema,
    RouteSchema,
)
from gateway.policy.source import Document, Loc, Problem


@dataclass
class CheckedSet:
    """What the rules found that compiling needs: the sections' owners and the key registry."""

    files: Sequence[tuple[Document, PolicyFileSchema]]
    identity: IdentitySchema = field(default_factory=IdentitySchema)
    identity_doc: Document | None = None
    clusters: ClustersSchema | None = None
    routes: Sequence[RouteSchema] = ()
    registry: Document | None = None
    api_keys: Mapping[str, ApiKeyEntry] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def check_set(files: Sequence[tuple[Document, PolicyFileSchema]]) -> CheckedSet:
    found = CheckedSet(files)
    _sections(found)
    if found.identity_doc is not None:
        _identity(found, found.identity_doc)
        if found.identity.api_keys is not None:
            _registry(found, found.identity_doc, found.identity.api_keys.file)
    _names(found)
    for doc, schema in files:
        for index, policy in enumerate(schema.policies):
            _policy(found, doc, index, policy)
    _clusters(found)
    check_routes(found)
    return found


def _sections(found: CheckedSet) -> None:
    """At most one file may hold ``identity``, ``clusters`` and ``routes``: a merge would be
    a guess."""
    owners: dict[str, Document] = {}
    for doc, schema in found.files:
        for section in ("identity", "clusters", "routes"):
            if getattr(schema, section) is None:
                continue
            first = owners.get(section)
            if first is not None:
                line, col = first.place((section,), key=True)
                found.problems.append(
                    doc.problem(
                        (section,),
                        f"already defined in {first.shown}:{line}:{col}; "
                        f"only one file of a set may define {section}",
                        key=True,
                    )
                )
                continue
            owners[section] = doc
            if section == "identity" and schema.identity is not None:
                found.identity, found.identity_doc = schema.identity, doc
            elif section == "clusters" and schema.clusters is not None:
                found.clusters = schema.clusters
            elif section == "routes" and schema.routes is not None:
                found.routes = schema.routes


# Headers a client or a proxy sets for their own meaning (RFC 9110, 9111, 9112 and common
# practice); ``if-*`` and the browser's ``sec-*`` are added by prefix.
_STANDARD = HOP_BY_HOP | {
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "expect",
    "forwarded",
    "from",
    "host",
    "max-forwards",
    "origin",
    "pragma",
    "priority",
    "range",
    "referer",
    "user-agent",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
}
# What the model APIs and their SDKs read or send on every request.
_MODEL_API = {"x-api-key", "api-key"}
_MODEL_API_PREFIXES = ("anthropic-", "openai-", "x-stainless-")

# The widest networks trusted without ``trust_any_source``: an edge is a few subnets, not
# a sixteenth of the internet. An IPv4-mapped IPv6 network (``::ffff:0:0/96``, how a
# dual-stack socket shows IPv4 peers) is judged by the IPv4 network it maps.
_WIDEST = {4: 8, 6: 16}
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _identity(found: CheckedSet, doc: Document) -> None:
    identity = found.identity
    for index, network in enumerate(identity.trusted_sources):
        if not identity.trust_any_source and network.prefixlen < _widest(network):
            found.problems.append(
                doc.problem(("identity", "trusted_sources", index), _wide(network))
            )
    account, organization = identity.account_header, identity.organization_header
    _forgeable(found, doc, ("identity", "account_header"), account, "x-account-id")
    if organization is not None:
        loc: Loc = ("identity", "organization_header")
        _forgeable(found, doc, loc, organization, "x-organization-id")
        if organization == account:
            found.problems.append(
                doc.problem(
                    loc,
                    f"{organization} is already identity.account_header; one header cannot "
                    "carry both ids: give the organization its own header (e.g. "
                    "x-organization-id), or null to turn it off",
                )
            )
    # An attribute header may also be a link_by header: one value, read for two purposes.
    for name, header in identity.attribute_headers.items():
        loc = ("identity", "attribute_headers", name)
        example = f"x-account-{name.replace('_', '-')}"
        _forgeable(found, doc, loc, header, example)
        if (role := _role(identity, header)) is not None:
            found.problems.append(
                doc.problem(
                    loc,
                    f"{header} is already {_shown(identity, role)}; an attribute needs a "
                    f"header of its own, e.g. {example}",
                )
            )


def _widest(network: Network) -> int:
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        return _MAPPED.prefixlen + _WIDEST[4]
    return _WIDEST[network.version]


def _wide(network: Network) -> str:
    reach = (
        "trusts every address" if network.prefixlen == 0 else f"is wider than a /{_widest(network)}"
    )
    return (
        f"{network} {reach}, so any client in it could claim any account; list only your "
        "edge's networks, or set identity.trust_any_source: true if nothing else can reach "
        "the gateway"
    )


def _forgeable(
    found: CheckedSet, doc: Document, loc: Loc, header: str, example: str, also: str = ""
) -> None:
    """A problem when ``header`` is one a client or its SDK sends itself: what the edge
    vouches for must travel in a header only the edge sets."""
    if header in _MODEL_API or header.startswith(_MODEL_API_PREFIXES):
        reason = "a header of the model API, which clients send themselves"
    elif header in _STANDARD or header.startswith(("if-", "sec-")):
        reason = "a standard HTTP header, which clients and proxies set for its own meaning"
    else:
        return
    message = (
        f"{header} is {reason}, so its value cannot be trusted; use a header only your "
        f"edge sets, e.g. {example}{also}"
    )
    found.problems.append(doc.problem(loc, message))


def _role(identity: IdentitySchema, header: str) -> str | None:
    """Which identity header ``header`` is, defaults included."""
    for role in ("account_header", "organization_header"):
        if header == getattr(identity, role):
            return role
    return None


def _shown(identity: IdentitySchema, role: str) -> str:
    return f"identity.{role}" + ("" if role in identity.model_fields_set else " (by default)")


def _registry(found: CheckedSet, doc: Document, name: str) -> None:
    path = doc.path.parent / name  # an absolute name stays absolute
    loc = ("identity", "api_keys", "file")
    if not path.is_file():
        found.problems.append(doc.problem(loc, f"no such file {path}"))
        return
    result = read_registry(path)
    if isinstance(result, list):
        found.problems.extend(result)
        return
    found.registry, found.api_keys = result
    if not found.api_keys:
        found.problems.append(doc.problem(loc, f"{path} lists no keys"))


def _names(found: CheckedSet) -> None:
    seen: dict[str, tuple[Document, int]] = {}
    for doc, schema in found.files:
        for index, policy in enumerate(schema.policies):
            loc = ("policies", index, "name")
            if policy.name in seen:
                first_doc, first_index = seen[policy.name]
                line, col = first_doc.place(("policies", first_index, "name"))
                where = f"line {line}" if first_doc is doc else f"{first_doc.shown}:{line}:{col}"
                found.problems.append(
                    doc.problem(loc, f"policy name {policy.name!r} is already used at {where}")
                )
            else:
                seen[policy.name] = (doc, index)


def attribute_sources(found: CheckedSet) -> set[str]:
    """Names a request can carry: the model, the behaviour verdicts (gateway.behaviour),
    attribute headers, attributes of API keys."""
    names = {"model", *BEHAVIOUR_ATTRIBUTES, *found.identity.attribute_headers}
    for entry in found.api_keys.values():
        names.update(entry.attributes)
    return names


def _no_source(name: str) -> str:
    return f"match key {name!r} has no source: add it to identity.attribute_headers"


def _policy(found: CheckedSet, doc: Document, index: int, policy: PolicySchema) -> None:
    loc = ("policies", index)
    sources = attribute_sources(found)
    for key in policy.match:
        if key not in sources:
            found.problems.append(doc.problem((*loc, "match", key), _no_source(key), key=True))
    # A clusters section, even an empty one (links made with the admin API only), says
    # clusters are meant; without one a cluster policy is most likely a slip.
    if policy.scope == "cluster" and found.clusters is None:
        found.problems.append(
            doc.problem(
                (*loc, "scope"),
                "scope cluster has no source: add a clusters section with links or link_by, "
                "or 'clusters: {}' when links are made with the admin API only",
            )
        )
    if policy.min_organizations is not None and policy.scope != "cluster":
        found.problems.append(
            doc.problem(
                (*loc, "min_organizations"),
                f"min_organizations counts the organizations of a cluster; scope "
                f"{policy.scope} has none: remove it, or use scope: cluster",
            )
        )
    has_organizations = found.identity.organization_header is not None or any(
        entry.organization is not None for entry in found.api_keys.values()
    )
    if policy.scope == "organization" and not has_organizations:
        found.problems.append(
            doc.problem(
                (*loc, "scope"),
                "scope organization has no source: identity.organization_header is off "
                "and no API key names an organization",
            )
        )
    if policy.scale_by == "cluster_accounts" and policy.scope != "cluster":
        found.problems.append(
            doc.problem(
                (*loc, "scale_by"),
                f"cluster_accounts counts the accounts of a cluster; scope {policy.scope} "
                "has none: use scope: cluster, or an attribute",
            )
        )
    if policy.scale_exponent is not None and policy.scale_by is None:
        found.problems.append(
            doc.problem(
                (*loc, "scale_exponent"),
                "scale_exponent raises what scale_by counts; it needs scale_by",
            )
        )
    if policy.scale_by not in (None, "cluster_accounts") and policy.scale_by not in sources:
        found.problems.append(
            doc.problem(
                (*loc, "scale_by"), _no_source(policy.scale_by).replace("match key", "attribute")
            )
        )
    capped = {"tokens", "output_tokens"}
    if policy.action == "cap" and not any(getattr(policy.limits, metric) for metric in capped):
        found.problems.append(
            doc.problem(
                (*loc, "action"),
                "action cap lowers a request's output cap to fit, so the policy needs a "
                "tokens or output_tokens limit; add one, or use action: refuse",
            )
        )
    if policy.min_output_tokens is not None and policy.action != "cap":
        found.problems.append(
            doc.problem(
                (*loc, "min_output_tokens"),
                "min_output_tokens is the smallest cap action cap admits; it needs action: cap",
            )
        )
    if policy.mode == "shadow" and policy.on_storage_error == "closed":
        found.problems.append(
            doc.problem(
                (*loc, "on_storage_error"),
                "a shadow policy never refuses, but closed would refuse whenever storage "
                "fails; use open, or mode: enforce",
            )
        )


def _clusters(found: CheckedSet) -> None:
    clusters = found.clusters
    if clusters is None:
        return
    doc = next(doc for doc, schema in found.files if schema.clusters is clusters)
    for name, accounts in clusters.links.items():
        for index, account in enumerate(accounts):
            if account in accounts[:index]:
                found.problems.append(
                    doc.problem(
                        ("clusters", "links", name, index), f"account {account!r} is listed twice"
                    )
                )
    signals: list[str] = []
    for index, signal in enumerate(clusters.link_by):
        name = "client_ip" if signal.client_ip is not None else f"header {signal.header}"
        if name in signals:
            found.problems.append(
                doc.problem(("clusters", "link_by", index), f"{name} is already a signal")
            )
        signals.append(name)
        if signal.header is not None:
            _link_header(found, doc, ("clusters", "link_by", index, "header"), signal.header)
    if clusters.exempt is not None and clusters.exempt.attribute is not None:
        for key in clusters.exempt.attribute:
            if key not in attribute_sources(found) - {"model", *BEHAVIOUR_ATTRIBUTES}:
                found.problems.append(
                    doc.problem(
                        ("clusters", "exempt", "attribute", key),
                        f"attribute {key!r} has no source: add it to identity.attribute_headers",
                        key=True,
                    )
                )


_LINKED_BY = {
    "account_header": "would link each account only to itself",
    "organization_header": (
        "would put every account of an organization in one cluster; for a budget per "
        "organization use scope: organization"
    ),
}


def _link_header(found: CheckedSet, doc: Document, loc: Loc, header: str) -> None:
    address = header in ("forwarded", "x-forwarded-for", "x-real-ip")
    also = ", or link by address with client_ip" if address else ""
    _forgeable(found, doc, loc, header, "x-device-id", also)
    if (role := _role(found.identity, header)) is not None:
        shown = _shown(found.identity, role)
        found.problems.append(
            doc.problem(loc, f"{header} is {shown}; linking by it {_LINKED_BY[role]}")
        )
