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


FULL = 1024 * 1024 - 100  # bytes: just under the size limit
DENSE = "version: 1\npolicies: [" + ",".join(["1"] * (FULL // 2)) + "]\n"
ALIASES = "version: 1\na: &a x\npolicies: [" + ",".join(["*a"] * (FULL // 3)) + "]\n"
BRACKETS = "version: 1\npolicies: " + "[" * FULL + "\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (DENSE, "2:200006: policies[99997]: the file expands to more than 100,000 values"),
        (ALIASES, "2:4: policies[99996]: the file expands to more than 100,000 values"),
        (BRACKETS, "2:75: nested more than 64 levels deep"),
    ],
    ids=["dense-list", "dense-aliases", "brackets"],
)
def test_a_file_of_one_long_line_gets_its_problem(tmp_path: Path, text: str, line: str) -> None:
    """Reading stops where the file crosses a bound, however much of it follows."""
    (tmp_path / "big.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "big.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"big.yaml:{line}"), result.stderr


def test_every_kind_of_bomb_is_here() -> None:
    assert {path.stem for path in BOMBS} >= {
        "alias-bomb",
        "deep-aliases",
        "deep-brackets",
        "deep-mappings",
        "python-object",
    }
