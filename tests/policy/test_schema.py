"""Every section of a policy or key file refuses keys it does not know.

Each model inherits ``Strict`` (``extra="forbid"``), but nothing else would notice if one
stopped doing so. This walks every model reachable from the two file schemas by their field
annotations; each must have a minimal valid document below, which must load, and must not load
with one key too many.
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.policy.schema import (
    ApiKeySchema,
    ApiKeysSchema,
    ClientIpSchema,
    ClustersSchema,
    ExemptSchema,
    IdentitySchema,
    KeyRegistrySchema,
    LimitsSchema,
    LinkSignalSchema,
    PolicyFileSchema,
    PolicySchema,
    ProblemSchema,
    RouteSchema,
)
from gateway.policy.source import Document, Loc, dotted, read_document
from gateway.policy.validation import validate

POLICY = {"name": "a", "scope": "account", "limits": {"requests": "1/minute"}}

# model: (the file schema it is read by, where it sits, a minimal valid document holding it)
MINIMAL: dict[type[BaseModel], tuple[type[BaseModel], Loc, dict[str, Any]]] = {
    PolicyFileSchema: (PolicyFileSchema, (), {"version": 1}),
    IdentitySchema: (PolicyFileSchema, ("identity",), {"version": 1, "identity": {}}),
    ApiKeysSchema: (
        PolicyFileSchema,
        ("identity", "api_keys"),
        {"version": 1, "identity": {"api_keys": {"file": "keys.yaml"}}},
    ),
    PolicySchema: (PolicyFileSchema, ("policies", 0), {"version": 1, "policies": [POLICY]}),
    LimitsSchema: (
        PolicyFileSchema,
        ("policies", 0, "limits"),
        {"version": 1, "policies": [POLICY]},
    ),
    ClustersSchema: (PolicyFileSchema, ("clusters",), {"version": 1, "clusters": {}}),
    LinkSignalSchema: (
        PolicyFileSchema,
        ("clusters", "link_by", 0),
        {"version": 1, "clusters": {"link_by": [{"header": "x-device-id"}]}},
    ),
    ClientIpSchema: (
        PolicyFileSchema,
        ("clusters", "link_by", 0, "client_ip"),
        {"version": 1, "clusters": {"link_by": [{"client_ip": {}}]}},
    ),
    ExemptSchema: (
        PolicyFileSchema,
        ("clusters", "exempt"),
        {"version": 1, "clusters": {"exempt": {}}},
    ),
    RouteSchema: (
        PolicyFileSchema,
        ("routes", 0),
        {"version": 1, "routes": [{"path": "/v1/messages", "meter": "anthropic-messages"}]},
    ),
    ProblemSchema: (
        PolicyFileSchema,
        ("policies", 0, "problem"),
        {
            "version": 1,
            "policies": [
                {
                    **POLICY,
                    "problem": {
                        "type": "https://example.com/problems/verify",
                        "detail": "Verify your account to raise this limit.",
                    },
                }
            ],
        },
    ),
    KeyRegistrySchema: (KeyRegistrySchema, (), {"keys": []}),
    ApiKeySchema: (
        KeyRegistrySchema,
        ("keys", 0),
        {"keys": [{"key_sha256": "0" * 64, "account": "acct-1"}]},
    ),
}


def models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """``root`` and every model its fields' annotations name, however deeply."""
    found: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model not in found:
            found.add(model)
            for info in model.model_fields.values():
                todo.extend(_named(info.annotation))
    return found


def _named(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _named(arg)]


def test_every_model_has_a_minimal_document() -> None:
    assert models(PolicyFileSchema) | models(KeyRegistrySchema) == set(MINIMAL)


def load(path: Path, data: dict[str, Any], root: type[BaseModel]) -> object:
    path.write_text(json.dumps(data))  # JSON is YAML
    doc = read_document(path)
    assert isinstance(doc, Document)
    return validate(doc, root)


@pytest.mark.parametrize("model", list(MINIMAL), ids=lambda model: model.__name__)
def test_a_model_refuses_an_unknown_key(model: type[BaseModel], tmp_path: Path) -> None:
    root, loc, minimal = MINIMAL[model]
    assert isinstance(load(tmp_path / "ok.yaml", minimal, root), root)
    data = copy.deepcopy(minimal)
    target: Any = data
    for part in loc:
        target = target[part]
    target["surprise"] = 1
    problems = load(tmp_path / "extra.yaml", data, root)
    assert isinstance(problems, list)
    assert [problem.text for problem in problems] == [
        f"{dotted((*loc, 'surprise'))}: unknown key 'surprise'"
    ]
