"""The checks of a set's ``routes`` section, run with the other rules (``rules.check_set``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.policy.routes import DEFAULT_CAPS, Meter

if TYPE_CHECKING:
    from gateway.policy.rules import CheckedSet

# Meters whose requests name an output cap the gateway can insert, and those with a body.
_CAPPED = frozenset(meter.value for meter in DEFAULT_CAPS)
_METERED = frozenset(meter.value for meter in Meter if meter.metered)


def check_routes(found: CheckedSet) -> None:
    """Each route declared once; caps only where a meter inserts one; bodies only by POST."""
    doc = next((doc for doc, schema in found.files if schema.routes is found.routes), None)
    if doc is None:
        return
    seen: dict[tuple[str, str], int] = {}
    for index, route in enumerate(found.routes):
        loc = ("routes", index)
        first = seen.setdefault((route.method, route.path), index)
        if first != index:
            line, _ = doc.place(("routes", first))
            found.problems.append(
                doc.problem(loc, f"{route.method} {route.path} is already declared at line {line}")
            )
        if route.default_max_output_tokens is not None and route.meter not in _CAPPED:
            found.problems.append(
                doc.problem(
                    (*loc, "default_max_output_tokens"),
                    f"meter {route.meter} has no output cap to insert; remove it",
                )
            )
        if route.meter in _METERED and route.method != "POST":
            found.problems.append(
                doc.problem(
                    (*loc, "method"),
                    f"meter {route.meter} reads a request body; its method must be POST",
                )
            )
