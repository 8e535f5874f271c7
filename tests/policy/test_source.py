"""Reading YAML with positions, within bounds that no real policy file comes near."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import source
from gateway.policy.source import Document, Problem, read_document


def test_a_file_over_the_size_limit_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"version: 1\n" + b"#" * source.MAX_BYTES)
    assert read_document(path) == Problem(
        str(path),
        0,
        0,
        "is larger than 1 MiB, the most a policy or key file may hold; "
        "split the policies across the files of a folder",
    )


def test_aliases_below_the_limit_are_expanded(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: &a [1, 2, 3]\nb: [*a, *a]\nc: {x: *a}\n")
    doc = read_document(path)
    assert isinstance(doc, Document)
    assert doc.data == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]], "c": {"x": [1, 2, 3]}}
    assert doc.place(("b", 1, 2)) == (1, 14)  # an alias's items are placed at its anchor's


def test_an_aliased_string_is_not_copied_per_use(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "a: &a |\n  a block scalar, which ruamel gives its own str subclass\nb: [*a, *a]\n"
    )
    doc = read_document(path)
    assert isinstance(doc, Document) and isinstance(doc.data, dict)
    first, second = doc.data["b"]
    assert type(first) is str
    assert first is second


def test_the_value_limit_counts_every_copy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    items = ", ".join(["*a"] * (source.MAX_VALUES // 100))
    path.write_text(f"a: &a [{', '.join(['x'] * 100)}]\nb: [{items}]\n")
    assert read_document(path) == Problem(
        str(path),
        1,
        4,
        "b[989]: the file expands to more than 100,000 values (each use of a YAML alias "
        "repeats its anchor's content); use fewer aliases",
    )


def test_a_recursion_error_still_gets_a_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The depth bounds keep the reading off the end of the stack (and under libyaml's own
    bound of 1,000); were they lifted, the error would still come back as a problem rather than
    a traceback."""
    monkeypatch.setattr(source, "MAX_DEPTH", 100_000)
    path = tmp_path / "p.yaml"
    path.write_text("x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n")
    assert read_document(path) == Problem(
        str(path), 1, 1, "nested more than 64 levels deep; no policy file needs more than 8"
    )


def read(tmp_path: Path, text: str) -> Document | Problem:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return read_document(path)


def test_merged_keys_take_the_place_of_the_merge(tmp_path: Path) -> None:
    """As YAML's merge key has it: a key written in the mapping wins, then the first merged
    mapping that has it; the merged keys go where the ``<<`` is, and are placed there."""
    doc = read(
        tmp_path,
        "x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\nz:\n  k: 0\n  <<: [*x, *y]\n  a: 3\n",
    )
    assert isinstance(doc, Document) and isinstance(doc.data, dict)
    assert list(doc.data["z"].items()) == [("k", 0), ("b", 1), ("c", 2), ("a", 3)]
    assert doc.place(("z", "b"), key=True) == doc.place(("z", "b")) == (5, 3)
    assert doc.place(("z", "a"), key=True) == (6, 3)


def test_a_merge_may_be_written_out_and_nested(tmp_path: Path) -> None:
    doc = read(tmp_path, "base: &b {<<: {a: 1}, b: 2}\nz: {<<: *b, c: 3, '<<': 4}\n")
    assert isinstance(doc, Document) and isinstance(doc.data, dict)
    assert doc.data["z"] == {"a": 1, "b": 2, "c": 3, "<<": 4}


@pytest.mark.parametrize("merged", ["1", "[*a, 2]", "*l"])
def test_a_merge_of_anything_but_mappings_is_refused(tmp_path: Path, merged: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"a: &a {{x: 1}}\nl: &l [1]\nz:\n  <<: {merged}\n")
    assert read_document(path) == Problem(
        str(path),
        4,
        3,
        "a merge ('<<') takes a mapping, or a list of mappings, to merge into this one",
    )


def test_an_empty_value_is_placed_after_its_key(tmp_path: Path) -> None:
    doc = read(tmp_path, "identity:\npolicies: []\n")
    assert isinstance(doc, Document)
    assert doc.place(("identity",)) == (1, 10)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\n]\n", "2:1: YAML syntax error: this ']' closes no '['; remove it"),
        ("- a\n}\n", "2:1: YAML syntax error: this '}' closes no '{'; remove it"),
        ("a: [1, 2\n", "1:4: YAML syntax error: this '[' is not closed before the end of the "
         "file; close it with ']'"),
        ("a:\n  b: 1\n c: 2\n", "3:2: YAML syntax error: this line's indentation matches no "
         "level above it; indent it like its neighbours"),
        ("a: @x\n", "1:4: YAML syntax error: this character cannot start an unquoted value; "
         "quote the value"),
        ("a: b: c\n", "1:5: YAML syntax error: ': ' cannot be part of an unquoted value; quote "
         "the value, or fix the indentation"),
        ("a: b\n- c\n", "2:1: YAML syntax error: a list item ('- ') cannot follow keys at the "
         "same indentation; remove the '- ', or put the list under a key of its own"),
        ("a:\n  - b: 1\n  c: 2\n", "3:3: YAML syntax error: this line is indented like the "
         "list's items but is not one; indent it under the item above, or start it with '- '"),
        ("a: 'x\n", "1:4: YAML syntax error: this quoted string is never closed; close it"),
        ("a: \"\\q\"\n", "1:5: YAML syntax error: this escape is not one YAML knows; write "
         "'\\\\' for a backslash, or use single quotes"),
    ],
)  # fmt: skip
def test_a_syntax_error_says_where_and_what_to_write(tmp_path: Path, text: str, line: str) -> None:
    found = read(tmp_path, text)
    assert isinstance(found, Problem)
    assert f"{found.line}:{found.col}: {found.text}" == line


def test_a_control_character_is_refused_where_it_is(tmp_path: Path) -> None:
    found = read(tmp_path, "a: 1\nné: \x07\n")
    assert isinstance(found, Problem)
    assert (found.line, found.col, found.text) == (
        2,
        5,
        "YAML syntax error: the character U+0007 is not allowed in YAML; remove it",
    )


def test_a_tab_inside_a_value_is_part_of_it(tmp_path: Path) -> None:
    doc = read(tmp_path, "a: b\tc\n")
    assert isinstance(doc, Document)
    assert doc.data == {"a": "b\tc"}
