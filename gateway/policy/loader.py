"""Policy files → a checked, compiled ``PolicySet``, or one ``PolicyError`` listing every problem.

Three passes, each only when the one before found nothing: read YAML (syntax errors), validate
each file against the schema (all field problems of all files), then the rules across fields
and files. Every problem is one ``file:line:col: path: message`` line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from gateway.errors import PolicyError
from gateway.policy.action_rules import check_actions
from gateway.policy.model import (
    Action,
    ClusterConfig,
    IdentityConfig,
    LinkSignal,
    Mode,
    OnStorageError,
    Policy,
    PolicySet,
    RefusalProblem,
    Scope,
)
from gateway.policy.routes import SHIPPED_ROUTES, Meter, Route, merged, route
from gateway.policy.rules import CheckedSet, check_set
from gateway.policy.schema import ClustersSchema, PolicyFileSchema, PolicySchema, RouteSchema
from gateway.policy.source import Document, Problem, read_document
from gateway.policy.validation import validate

SUFFIXES = (".yaml", ".yml")


def policy_files(path: str | Path) -> list[Path]:
    """The files of a set: ``path`` itself, or a folder's ``*.yaml``/``*.yml`` files by name.

    Hidden entries are skipped: a Kubernetes ConfigMap mount keeps its real files under
    ``..data`` and ``..2024_…`` and shows each key as a symlink, which ``is_file`` follows.
    """
    root = Path(path)
    if not root.is_dir():
        return [root]
    return sorted(
        child
        for child in root.iterdir()
        if not child.name.startswith(".") and child.suffix in SUFFIXES and child.is_file()
    )


def load_policy_set(path: str | Path) -> PolicySet:
    root = Path(path)
    if not root.exists():
        raise PolicyError([f"{root}: no such file or folder"])
    files = policy_files(root)
    if not files:
        raise PolicyError([f"{root}: no *.yaml or *.yml files in this folder"])
    parsed: list[tuple[Document, PolicyFileSchema]] = []
    problems: list[Problem] = []
    for file in files:
        doc = read_document(file)
        if isinstance(doc, Problem):
            problems.append(doc)
            continue
        schema = validate(doc, PolicyFileSchema)
        if isinstance(schema, list):
            problems.extend(schema)
        else:
            parsed.append((doc, schema))
    if not problems:
        checked = check_set(parsed)
        check_actions(checked)
        if not checked.problems:
            return _compile(checked)
        problems = checked.problems
    raise PolicyError(_in_order(problems, [str(file) for file in files]))


def _in_order(problems: list[Problem], files: list[str]) -> list[str]:
    """By file (in set order; a key registry after the policy files), then by position."""
    rank = {name: index for index, name in enumerate(files)}
    problems.sort(key=lambda p: (rank.get(p.file, len(rank)), p.file, p.line, p.col, p.text))
    return [str(problem) for problem in problems]


def _compile(checked: CheckedSet) -> PolicySet:
    docs = [doc for doc, _ in checked.files]
    identity = checked.identity
    registry = checked.registry
    compiled_identity = IdentityConfig(
        account_header=identity.account_header,
        organization_header=identity.organization_header or "",  # "" means off
        attribute_headers=dict(identity.attribute_headers),
        trusted_sources=tuple(identity.trusted_sources),
        api_keys_file=None if registry is None else str(registry.path),
        api_keys=checked.api_keys,
    )
    if registry is not None:
        docs.append(registry)
    policies = tuple(_policy(policy) for _, schema in checked.files for policy in schema.policies)
    return PolicySet(
        version=set_version(docs),
        sources=tuple(doc.shown for doc in docs),
        identity=compiled_identity,
        policies=policies,
        clusters=ClusterConfig() if checked.clusters is None else _clusters(checked.clusters),
        routes=merged(SHIPPED_ROUTES, (_route(route) for route in checked.routes)),
    )


def _route(schema: RouteSchema) -> Route:
    meter = Meter(schema.meter)
    return route(schema.method, schema.path, meter, schema.default_max_output_tokens, schema.errors)


def set_version(docs: Iterable[Document]) -> str:
    """SHA-256 over each file's name and bytes: equal on every replica that runs the same set.

    Names, not full paths, so two mounts of one set agree; lengths go in so no two sets of
    files can run together into the same bytes.
    """
    digest = hashlib.sha256()
    for doc in docs:
        name = doc.path.name.encode()
        digest.update(b"%d:%s:%d:" % (len(name), name, len(doc.raw)))
        digest.update(doc.raw)
    return digest.hexdigest()[:12]


def _policy(policy: PolicySchema) -> Policy:
    return Policy(
        name=policy.name,
        scope=Scope(policy.scope),
        limits=policy.limits.all(),
        match=tuple(policy.match.items()),
        mode=Mode(policy.mode),
        on_storage_error=OnStorageError(policy.on_storage_error),
        overrides={key: limits.all() for key, limits in policy.overrides.items()},
        min_organizations=policy.min_organizations or 1,
        action=Action(policy.action),
        min_output_tokens=policy.min_output_tokens or 256,
        scale_by=policy.scale_by,
        scale_exponent=1.0 if policy.scale_exponent is None else policy.scale_exponent,
        max_delay=10.0 if policy.max_delay is None else policy.max_delay,
        problem=None if policy.problem is None else RefusalProblem(**policy.problem.model_dump()),
    )


def _clusters(clusters: ClustersSchema) -> ClusterConfig:
    signals = tuple(
        LinkSignal(header=signal.header, max_accounts=signal.max_accounts)
        if signal.client_ip is None
        else LinkSignal(
            ipv4_prefix=signal.client_ip.ipv4_prefix,
            ipv6_prefix=signal.client_ip.ipv6_prefix,
            max_accounts=signal.max_accounts,
        )
        for signal in clusters.link_by
    )
    exempt = clusters.exempt
    attribute = None if exempt is None or exempt.attribute is None else exempt.attribute
    return ClusterConfig(
        links={name: tuple(accounts) for name, accounts in clusters.links.items()},
        link_by=signals,
        disclose=clusters.disclose,
        exempt_organizations=() if exempt is None else tuple(exempt.organizations),
        exempt_attribute=None if attribute is None else next(iter(attribute.items())),
    )
