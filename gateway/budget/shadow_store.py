"""The shadow-report store interface: would-be refusals of shadow policies, tallied by
(policy, scope, scope id) and kept bounded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ShadowRow:
    """How often a shadow policy would have refused one scope id, and the tokens asked for."""

    policy: str
    scope: str
    scope_id: str
    count: int
    tokens: int  # the refused requests' reserved tokens (input estimate + max_tokens)
    first_seen: float  # epoch seconds
    last_seen: float


class ShadowStore(Protocol):
    """Every method raises ``StorageError`` when it cannot answer."""

    async def add(self, rows: Sequence[ShadowRow]) -> None:
        """Add counts and tokens, widen first/last seen; past the cap, drop the rows with
        the smallest counts (a new row that does not beat them is dropped at once)."""
        ...

    async def rows(self) -> tuple[list[ShadowRow], int]:
        """The rows, largest count first, and how many refusals dropped rows held."""
        ...
