"""Composing libyaml's events: what unquoted scalars mean, and what a policy file may not use."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from gateway.policy import composer
from gateway.policy.source import Document, Problem, read_document
from tests.policy.test_invalid import expected

HERE = Path(__file__).parent


def read(tmp_path: Path, text: str) -> Document | Problem:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return read_document(path)


def value(tmp_path: Path, text: str) -> object:
    doc = read(tmp_path, f"k: {text}\n")
    assert isinstance(doc, Document) and isinstance(doc.data, dict), doc
    return doc.data["k"]


def problem(tmp_path: Path, text: str) -> str:
    found = read(tmp_path, text)
    assert isinstance(found, Problem), found
    return str(found).removeprefix(f"{tmp_path / 'p.yaml'}:")


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("True", True),
        ("false", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("0o17", 15),
        ("017", 17),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("-12", -12),
        ("1:30", "1:30"),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
        ("2024-01-01", date(2024, 1, 1)),
        ("2024-01-01 10:00:00Z", datetime(2024, 1, 1, 10, tzinfo=UTC)),
        ("'2024-01-01'", "2024-01-01"),
        ("'yes'", "yes"),
        ('"1"', "1"),
        ("0x_", "0x_"),
        ("2024-13-45", "2024-13-45"),
        ("=", "="),
        ("<<", "<<"),
    ],
)
def test_unquoted_scalars_mean_what_yaml_1_2_says(tmp_path: Path, text: str, meant: object) -> None:
    found = value(tmp_path, text)
    assert (type(found), found) == (type(meant), meant)


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("yes", True),
        ("Off", False),
        ("y", True),
        ("017", 15),
        ("0o17", "0o17"),
        ("09", "09"),
        ("1:30", 90),
        ("1:30.5", 90.5),
        ("1_000", 1000),
        ("2024-01-01", date(2024, 1, 1)),
    ],
)
def test_a_yaml_1_1_directive_brings_its_rules(tmp_path: Path, text: str, meant: object) -> None:
    doc = read(tmp_path, f"%YAML 1.1\n---\nk: {text}\n")
    assert isinstance(doc, Document) and isinstance(doc.data, dict)
    assert (type(doc.data["k"]), doc.data["k"]) == (type(meant), meant)


def test_dot_nan_is_not_a_number(tmp_path: Path) -> None:
    found = value(tmp_path, ".nan")
    assert isinstance(found, float) and math.isnan(found)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: ! 1\n", "1:4"),
        ("a: !!int 1\n", "1:4"),
        ("!!str a: 1\n", "1:1"),
        ("a: !!seq [1]\n", "1:4"),
        ("a: &x !t {b: 1}\n", "1:4"),
    ],
)
def test_every_explicit_tag_is_refused(tmp_path: Path, text: str, where: str) -> None:
    assert problem(tmp_path, text) == f"{where}: {composer.TAGGED}"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\nb: 2\na: 3\n", "3:1"),
        ("a: {x: 1, x: 2}\n", "1:11"),
        ("1: a\n1.0: b\n", "2:1"),
        ("'a': 1\na: 2\n", "2:1"),
        ("x: &m {a: 1}\ny:\n  <<: *m\n  <<: *m\n", "4:3"),
    ],
)
def test_a_key_given_twice_is_refused(tmp_path: Path, text: str, where: str) -> None:
    assert problem(tmp_path, text) == f"{where}: {composer.REPEATED}"


@pytest.mark.parametrize(
    ("text", "where"),
    [("[a]: 1\n", "1:1"), ("{a: 1}: 1\n", "1:1"), ("a: &k k\n*k : 1\n", "2:1")],
)
def test_a_key_must_be_written_out(tmp_path: Path, text: str, where: str) -> None:
    assert problem(tmp_path, text) == f"{where}: {composer.KEY}"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    assert problem(tmp_path, "a: &a [1, *a]\n") == (
        "1:11: a[1]: *a is inside &a, so it would repeat itself without end; remove it"
    )


def test_an_undefined_alias_is_named(tmp_path: Path) -> None:
    assert problem(tmp_path, "a: *nope\n") == (
        "1:4: YAML syntax error: *nope names no &nope above; define that anchor, or write the value"
    )


def test_a_second_document_is_refused_even_after_an_end_marker(tmp_path: Path) -> None:
    assert problem(tmp_path, "a: 1\n...\n---\nb: 2\n") == f"3:1: {composer.SECOND}"


def test_a_reused_anchor_names_its_latest_value(tmp_path: Path) -> None:
    doc = read(tmp_path, "a: &x 1\nb: &x 2\nc: *x\n")
    assert isinstance(doc, Document)
    assert doc.data == {"a": 1, "b": 2, "c": 2}


def test_brackets_past_libyamls_own_limit_are_refused_at_ours(tmp_path: Path) -> None:
    """libyaml stops at 1,000 open brackets before handing over any of their events."""
    assert problem(tmp_path, "a: ['[[[', " + "[" * 2000) == f"1:75: {composer.NESTED}"
    assert problem(tmp_path, "[" * 2000) == f"1:65: {composer.NESTED}"


def test_a_dense_list_is_refused_once_it_passes_the_bound(tmp_path: Path) -> None:
    """Composing stops at the 100,001st value; the rest of the file is never parsed."""
    text = "policies: [" + ",".join(["1"] * 500_000) + "]\n"
    assert problem(tmp_path, text) == f"1:200008: policies[99998]: {composer.EXPANDS}"


CASES = sorted(HERE.glob("invalid/yaml-*.yaml")) + sorted(HERE.glob("bombs/*.yaml"))


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.parent.name}/{case.name}")
def test_without_libyaml_pyyaml_gives_the_same_problems(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where PyYAML was built without libyaml, its own (slower) parser gives the same events."""
    monkeypatch.setattr(composer, "_PARSER", yaml.SafeLoader)
    monkeypatch.chdir(HERE)
    found = read_document(case.relative_to(HERE))
    assert [str(found)] == expected(case)
