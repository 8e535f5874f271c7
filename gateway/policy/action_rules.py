"""The checks of what a policy does with a request that does not fit it (``action``,
``max_delay``, ``problem``), run after the other rules (``rules.check_set``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.policy.rules import CheckedSet


def check_actions(found: CheckedSet) -> None:
    for doc, schema in found.files:
        for index, policy in enumerate(schema.policies):
            loc = ("policies", index)
            if policy.max_delay is not None and policy.action != "slow":
                found.problems.append(
                    doc.problem(
                        (*loc, "max_delay"),
                        "max_delay is how long action slow holds a request; it needs action: slow",
                    )
                )
            if policy.mode == "shadow" and policy.problem is not None:
                found.problems.append(
                    doc.problem(
                        (*loc, "problem"),
                        "a shadow policy never refuses, so no client would see its problem; "
                        "remove it, or use mode: enforce",
                    )
                )
