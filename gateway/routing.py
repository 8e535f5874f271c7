"""Matching a request to the policy set's route table (``gateway.policy.routes``).

A path matches a route exactly, case included (both APIs' paths are case-sensitive), or
segment by segment where the route has a ``{name}`` placeholder. A path that some route
declares under other methods answers 405 with ``allow``; a path no route declares, 404.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.routes import Route


@dataclass(frozen=True, slots=True)
class NotAllowed:
    """The path is declared, but not for this method."""

    allowed: tuple[str, ...]


class RouteTable:
    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[tuple[str, ...], Route]] = []
        for route in routes:
            segments = tuple(route.path.split("/")[1:])
            if any(_placeholder(segment) for segment in segments):
                self._patterns.append((segments, route))
            else:
                self._exact.setdefault(route.path, {})[route.method] = route

    def find(self, method: str, path: str) -> Route | NotAllowed | None:
        # An exact route wins over a pattern for its own method, and only for it.
        by_method = dict(self._exact.get(path, {}))
        if self._patterns:
            segments = path.split("/")[1:]
            for pattern, route in self._patterns:
                if _matches(pattern, segments):
                    by_method.setdefault(route.method, route)
        if not by_method:
            return None
        found = by_method.get(method)
        return found if found is not None else NotAllowed(tuple(sorted(by_method)))


def _placeholder(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def _matches(pattern: tuple[str, ...], segments: list[str]) -> bool:
    if len(pattern) != len(segments):
        return False
    return all(
        (_placeholder(want) and got != "") or want == got
        for want, got in zip(pattern, segments, strict=True)
    )
