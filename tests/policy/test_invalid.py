"""Every invalid policy case is a small file (or a folder, under sets/) with its exact problems.

The expected lines are the case's ``# expect:`` comments, in file order; paths in them are
relative to tests/policy, which is where the loader runs here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set

HERE = Path(__file__).parent
CASES = sorted(
    [path.relative_to(HERE) for path in (HERE / "invalid").glob("*.yaml")]
    + [path.relative_to(HERE) for path in (HERE / "invalid" / "sets").iterdir()]
)


def expected(case: Path) -> list[str]:
    files = sorted(case.glob("*.yaml")) if case.is_dir() else [case]
    prefix = "# expect: "
    return [
        line.removeprefix(prefix)
        for file in files
        for line in file.read_text().splitlines()
        if line.startswith(prefix)
    ]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_invalid_case(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE)
    lines = expected(case)
    assert lines, f"{case} has no '# expect:' line"
    with pytest.raises(PolicyError) as caught:
        load_policy_set(case)
    assert caught.value.problems == lines


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20
