"""A YAML file read with positions, and problems located in it.

ruamel.yaml's round-trip loader keeps the line and column of every key and item; we copy the
document into plain Python values (what pydantic validates) and keep those positions beside
it, keyed by the same ``loc`` tuples pydantic puts in its errors.

Reading is bounded (file size, nesting, values once aliases are expanded) and refuses what a
policy has no use for (tags, keys that are lists or mappings), so a malformed or hostile file
gets one problem, at once, never a traceback or a constructed object.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, ScalarEvent
from ruamel.yaml.scanner import RoundTripScanner

from gateway.policy.amounts import show

Loc = tuple[str | int, ...]
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")

# A policy set is deployed as a Kubernetes ConfigMap, which holds at most 1 MiB; anything
# bigger is a mistake (a log, a dump), refused before the parser spends seconds on it.
MAX_BYTES = 1024 * 1024
# The format nests 8 levels at most. ruamel's composer recurses once per level, so without a
# bound a few thousand brackets end in a RecursionError.
MAX_DEPTH = 64
# Each use of an alias copies its anchor: nine anchors of nine aliases each make 387 million
# values from 300 bytes. A 1 MiB policy file written out holds under 100,000.
MAX_VALUES = 100_000

_TOO_BIG = (
    f"is larger than {MAX_BYTES // 1024 // 1024} MiB, the most a policy or key file may hold; "
    "split the policies across the files of a folder"
)
_NESTED = f"nested more than {MAX_DEPTH} levels deep; no policy file needs more than 8"
_EXPANDS = (
    f"the file expands to more than {MAX_VALUES:,} values (each use of a YAML alias repeats "
    "its anchor's content); use fewer aliases"
)
_KEY = "a key must be written out: not a list, a mapping or an alias"
_TAGGED = (
    "YAML tags are not allowed; write the value without the tag (quote it if it must be a string)"
)


class Problem(NamedTuple):
    """One thing wrong; ``line`` 0 when the problem has no place in the file."""

    file: str
    line: int
    col: int
    text: str

    def __str__(self) -> str:
        if self.line == 0:
            return f"{self.file}: {self.text}"
        return f"{self.file}:{self.line}:{self.col}: {self.text}"


def dotted(loc: Loc) -> str:
    """``("policies", 0, "limits")`` → ``policies[0].limits``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{show(part)}]"
    return out


@dataclass
class Document:
    """A YAML file as plain data, with the 1-based position of every node under it."""

    path: Path
    shown: str  # the name problems use: the path as the operator wrote it
    raw: bytes
    data: object = None
    at: dict[Loc, tuple[int, int]] = field(default_factory=dict)  # a scalar, or a block's key
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)  # the key of a map entry

    def place(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """The position of ``loc``, or of its nearest ancestor present in the file."""
        if key and loc in self.keys:
            return self.keys[loc]
        while loc not in self.at and loc:
            loc = loc[:-1]
        return self.at.get(loc, (1, 1))

    def problem(self, loc: Loc, message: str, *, key: bool = False) -> Problem:
        line, col = self.place(loc, key=key)
        text = f"{dotted(loc)}: {message}" if loc else message
        return Problem(self.shown, line, col, text)

    def existing(self, loc: Loc) -> Loc:
        """The longest part of ``loc`` that names a node in the file."""
        while loc and loc not in self.at:
            loc = loc[:-1]
        return loc


def read_document(path: Path) -> Document | Problem:
    shown = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        return Problem(shown, 0, 0, f"cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_BYTES:
        return Problem(shown, 0, 0, _TOO_BIG)
    doc = Document(path, shown, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Problem(shown, 0, 0, "is not UTF-8 text")
    tree = _parse(shown, text)
    if isinstance(tree, Problem):
        return tree
    if tree is None:
        return Problem(shown, 1, 1, "the file is empty")
    doc.at[()] = (tree.lc.line + 1, tree.lc.col + 1) if isinstance(tree, CommentedMap) else (1, 1)
    try:
        doc.data = _plain(tree, (), doc, _Expansion())
    except _Refused as exc:
        return doc.problem(exc.loc, exc.message)
    except RecursionError:  # the bounds above should make this unreachable
        return Problem(shown, 1, 1, _NESTED)
    return doc


class _Unwanted(Exception):
    """Legal YAML a policy file may not use, found while parsing, with where it starts."""

    def __init__(self, message: str, mark: Any) -> None:
        self.message, self.mark = message, mark


class _Scanner(RoundTripScanner):
    """ruamel's scanner, refusing brackets nested past ``MAX_DEPTH``: it looks up to 1,024
    characters ahead at every open bracket, so ``[[[[...`` would cost half a second before
    the composer saw the depth."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _Unwanted(_NESTED, self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _Composer(Composer):
    """ruamel's composer (which recurses once per level), refusing deep nesting, any explicit
    tag (``!!python/object:...``, ``!foo``, even ``!!str``: a value's type is how it is
    written) and keys that are not scalars (which ruamel's constructor cannot always hash),
    before a node is built."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if parent is not None and index is None and not isinstance(event, ScalarEvent):
            raise _Unwanted(_KEY, event.start_mark)  # a mapping's key (items have an index)
        if not isinstance(event, AliasEvent):
            if event.tag is not None:
                raise _Unwanted(_TAGGED, event.start_mark)
            if self.depth >= MAX_DEPTH:
                raise _Unwanted(_NESTED, event.start_mark)
        return super().compose_node(parent, index)


def _parse(shown: str, text: str) -> object:
    """ruamel's round-trip tree of ``text`` (it keeps positions), or the Problem that stops it."""
    yaml = YAML(typ="rt")
    yaml.Scanner, yaml.Composer = _Scanner, _Composer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a reused anchor: legal YAML, not our problem
            return yaml.load(text)
    except _Unwanted as exc:
        return Problem(shown, exc.mark.line + 1, exc.mark.column + 1, exc.message)
    except MarkedYAMLError as exc:
        return _syntax_problem(shown, exc)
    except YAMLError as exc:
        return Problem(shown, 1, 1, f"YAML syntax error: {exc}")
    except RecursionError:
        return Problem(shown, 1, 1, _NESTED)


# The usual slips, by how ruamel's problem starts: whether the mistake is where the key,
# quote or bracket began (the context mark) rather than where the parser gave up, and what to
# write instead. WHERE becomes the place where it gave up.
_SLIPS = (
    ("found character '\\t'", False, "YAML does not allow a tab here; use spaces"),
    ("found character", False, "this character cannot start an unquoted value; quote the value"),
    ("could not find expected ':'", True, "this line is not 'key: value'; add ': ' after the key"),
    ("found unexpected end of stream", True, "this quoted string is never closed; close it"),
    ("expected ',' or ']'", True, "this '[' is not closed before WHERE; close it with ']'"),
    ("expected ',' or '}'", True, "this '{' is not closed before WHERE; close it with '}'"),
    ("expected <block end>, but found ']'", False, "this ']' closes no '['; remove it"),
    ("expected <block end>, but found '}'", False, "this '}' closes no '{'; remove it"),
    (
        "expected <block end>, but found '<block",
        False,
        "this line's indentation matches no level above it; indent it like its neighbours",
    ),
    (
        "mapping values are not allowed",
        False,
        "': ' cannot be part of an unquoted value; quote the value, or fix the indentation",
    ),
    ("sequence entries are not allowed", False, "a list item ('- ') must start its own line"),
    ("but found another document", False, "a policy file is one YAML document; remove this '---'"),
    ("found duplicate key", False, "this key is already in this mapping; keep one"),
)


def _syntax_problem(shown: str, exc: MarkedYAMLError) -> Problem:
    problem, end = exc.problem or "", exc.problem_mark
    for start, at_context, sentence in _SLIPS:
        mark = exc.context_mark if at_context else end
        if problem.startswith(start) and mark is not None:
            where = "the end of the file" if end is None or "<stream end>" in problem else ""
            sentence = sentence.replace(
                "WHERE", where or f"line {end.line + 1} column {end.column + 1}"
            )
            return Problem(shown, mark.line + 1, mark.column + 1, f"YAML syntax error: {sentence}")
    mark = end or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    text = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.problem and exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return Problem(shown, line, col, text)


class _Refused(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        self.loc, self.message = loc, message


@dataclass
class _Expansion:
    """What converting has produced: an alias is converted again at each use, so it counts."""

    values: int = 0
    converted: set[int] = field(default_factory=set)  # ids of the maps and lists seen
    scalars: dict[int, object] = field(default_factory=dict)  # by id, converted
    alias: Loc | None = None  # the outermost alias being converted: where a problem points


def _plain(node: object, loc: Loc, doc: Document, seen: _Expansion) -> object:
    seen.values += 1
    where = loc if seen.alias is None else seen.alias
    if seen.values > MAX_VALUES:
        raise _Refused(where, _EXPANDS)
    if len(loc) >= MAX_DEPTH:  # only aliases nest deeper than the composer allows
        raise _Refused(where, _NESTED)
    if not isinstance(node, CommentedMap | CommentedSeq):
        # Once per node, so that a thousand uses of a long string share one copy.
        if id(node) not in seen.scalars:
            seen.scalars[id(node)] = _base(node)
        return seen.scalars[id(node)]
    outermost = seen.alias is None and id(node) in seen.converted
    if outermost:
        seen.alias = loc
    seen.converted.add(id(node))
    out = (
        _mapping(node, loc, doc, seen)
        if isinstance(node, CommentedMap)
        else _sequence(node, loc, doc, seen)
    )
    if outermost:
        seen.alias = None
    return out


def _base(scalar: object) -> object:
    """ruamel's scalar subclasses remember formatting; pydantic's strict mode wants the base
    types."""
    for base in (bool, int, float, str):
        if isinstance(scalar, base):
            return base(scalar)
    return scalar


def _mapping(node: CommentedMap, loc: Loc, doc: Document, seen: _Expansion) -> dict[Any, object]:
    out: dict[Any, object] = {}
    for key, value in node.items():
        here = (*loc, key)
        # Keys pulled in by a ``<<`` merge have no position of their own.
        key_line, key_col, value_line, value_col = node.lc.data.get(
            key, [node.lc.line, node.lc.col, node.lc.line, node.lc.col]
        )
        doc.keys[here] = (key_line + 1, key_col + 1)
        block = isinstance(value, CommentedMap | CommentedSeq)
        doc.at[here] = doc.keys[here] if block else (value_line + 1, value_col + 1)
        out[key] = _plain(value, here, doc, seen)
    return out


def _sequence(node: CommentedSeq, loc: Loc, doc: Document, seen: _Expansion) -> list[object]:
    items: list[object] = []
    for index, value in enumerate(node):
        line, col = node.lc.data.get(index, [node.lc.line, node.lc.col])
        doc.at[(*loc, index)] = (line + 1, col + 1)
        items.append(_plain(value, (*loc, index), doc, seen))
    return items
