from __future__ import annotations

import pytest

from tests.deploy.tools import exported_series


@pytest.fixture(scope="session")
def exported() -> frozenset[str]:
    """What a real gateway's /metrics exports, read once per run."""
    return exported_series()
