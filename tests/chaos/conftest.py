"""The ``chaos`` fixture: a Harness whose processes are stopped however the test ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chaos.harness import Harness


@pytest.fixture
async def chaos(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.aclose()
