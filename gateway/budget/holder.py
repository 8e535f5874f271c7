"""The active policy set, swappable at run time (hot reload)."""

from __future__ import annotations

from gateway.policy.model import PolicySet


class PolicyHolder:
    """Readers take ``.current`` once per request, so a swap never splits a decision."""

    def __init__(self, policies: PolicySet) -> None:
        self.current = policies

    def swap(self, policies: PolicySet) -> PolicySet:
        """Install ``policies``; returns the set it replaced."""
        previous, self.current = self.current, policies
        return previous
