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
    assert doc.place(("b", 1, 2)) == (1, 14)  # ruamel places an alias's items at its anchor


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
    """The depth bounds keep ruamel's composer off the end of the stack; were they lifted, the
    error would still come back as a problem rather than a traceback."""
    monkeypatch.setattr(source, "MAX_DEPTH", 100_000)
    path = tmp_path / "p.yaml"
    path.write_text("x: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n")
    assert read_document(path) == Problem(
        str(path), 1, 1, "nested more than 64 levels deep; no policy file needs more than 8"
    )
