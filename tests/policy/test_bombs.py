"""Files made to hang or crash a YAML loader get their one problem line from ``gateway check``.

Each runs in a subprocess with a timeout, so a hang fails its test rather than the suite, and
a traceback shows up on stderr. The expected lines are the file's ``# expect:`` comments, as in
test_invalid.py. No timing is asserted: each answers in well under a second, but CI machines
vary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.policy.test_invalid import expected

HERE = Path(__file__).parent
BOMBS = sorted(path.relative_to(HERE) for path in (HERE / "bombs").glob("*.yaml"))


@pytest.mark.parametrize("bomb", BOMBS, ids=str)
def test_a_bomb_gets_its_problem(bomb: Path) -> None:
    lines = expected(HERE / bomb)
    assert lines, f"{bomb} has no '# expect:' line"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(bomb)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (1, "", lines)


def test_every_kind_of_bomb_is_here() -> None:
    assert {path.stem for path in BOMBS} >= {
        "alias-bomb",
        "deep-aliases",
        "deep-brackets",
        "deep-mappings",
        "python-object",
    }
