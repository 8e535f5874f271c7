"""The offline checker behind ``gateway check PATH...``: lint policy sets in CI, no Redis needed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set, policy_files
from gateway.policy.model import Mode, PolicySet


def check_paths(paths: Sequence[str | Path]) -> tuple[bool, list[str]]:
    """Load each path as its own policy set: a summary line per good set, problem lines per bad.

    True only when every set loads.
    """
    ok = True
    lines: list[str] = []
    for path in paths:
        try:
            policy_set = load_policy_set(path)
        except PolicyError as exc:
            ok = False
            lines.extend(exc.problems)
            continue
        lines.append(summary(path, policy_set))
    return ok, lines


def summary(path: str | Path, policy_set: PolicySet) -> str:
    """``policies/default.yaml: ok, 3 policies (2 enforce, 1 shadow), version 1a2b3c4d5e6f``."""
    count = len(policy_set.policies)
    shadow = sum(1 for policy in policy_set.policies if policy.mode is Mode.SHADOW)
    line = f"{Path(path)}: ok, {count} {'policy' if count == 1 else 'policies'}"
    line += f" ({count - shadow} enforce, {shadow} shadow)"
    if Path(path).is_dir():
        files = len(policy_files(path))
        line += f" from {files} {'file' if files == 1 else 'files'}"
    return f"{line}, version {policy_set.version}"
