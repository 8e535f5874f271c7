"""The API-key registry: which account (and organization, attributes) each key speaks for.

The registry holds only SHA-256 hex digests of keys, so a leaked policy repository leaks no
key. ``hash_api_key`` is what operators run to add one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from gateway.policy.model import ApiKeyEntry
from gateway.policy.schema import KeyRegistrySchema
from gateway.policy.source import Document, Problem, read_document
from gateway.policy.validation import validate


def hash_api_key(key: str) -> str:
    """The registry form of ``key``: SHA-256 of its UTF-8 bytes, lower-case hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_registry(path: Path) -> tuple[Document, Mapping[str, ApiKeyEntry]] | list[Problem]:
    doc = read_document(path)
    if isinstance(doc, Problem):
        return [doc]
    registry = validate(doc, KeyRegistrySchema)
    if isinstance(registry, list):
        return registry
    entries: dict[str, ApiKeyEntry] = {}
    first: dict[str, int] = {}
    problems = []
    for index, key in enumerate(registry.keys):
        if key.key_sha256 in first:
            line = doc.place(("keys", first[key.key_sha256]))[0]
            problems.append(
                doc.problem(
                    ("keys", index, "key_sha256"), f"the same key is already listed at line {line}"
                )
            )
            continue
        first[key.key_sha256] = index
        entries[key.key_sha256] = ApiKeyEntry(
            account=key.account,
            organization=key.organization,
            attributes=dict(key.attributes),
        )
    return problems or (doc, entries)
