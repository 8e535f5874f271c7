"""A YAML file read with positions, and problems located in it.

libyaml (through PyYAML) parses the file and ``composer`` puts its events together, each value
with its line and column; we copy the result into plain Python values (what pydantic
validates) and keep those positions beside it, keyed by the same ``loc`` tuples pydantic puts
in its errors.

Reading is bounded (file size, nesting, values once aliases are expanded) and refuses what a
policy has no use for (tags, keys that are lists or mappings, a key given twice), so a
malformed or hostile file gets one problem, at once, never a traceback or a constructed
object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml
from yaml.error import Mark
from yaml.reader import ReaderError

from gateway.policy.amounts import show
from gateway.policy.composer import (
    MAX_DEPTH,
    MAX_VALUES,
    MERGE,
    NESTED,
    Entry,
    Map,
    Node,
    Refused,
    Scalar,
    Seq,
    compose,
)

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "Document",
    "Loc",
    "Problem",
    "dotted",
    "read_document",
]

Loc = tuple[str | int, ...]
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")

# A policy set is deployed as a Kubernetes ConfigMap, which holds at most 1 MiB; anything
# bigger is a mistake (a log, a dump), refused before the parser spends time on it.
MAX_BYTES = 1024 * 1024

_MERGED = "a merge ('<<') takes a mapping, or a list of mappings, to merge into this one"
_TOO_BIG = (
    f"is larger than {MAX_BYTES // 1024 // 1024} MiB, the most a policy or key file may hold; "
    "split the policies across the files of a folder"
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
    try:
        root = compose(text, max_depth=MAX_DEPTH, max_values=MAX_VALUES)
        if root is None or (isinstance(root, Scalar) and root.value is None):
            return Problem(shown, 1, 1, "the file is empty")
        doc.at[()] = root.at if isinstance(root, Map) else (1, 1)
        doc.data = _plain(root, (), doc)
    except Refused as exc:
        line, col = exc.at
        message = exc.text if exc.loc is None else f"{dotted(exc.loc)}: {exc.text}"
        return Problem(shown, line, col, message)
    except yaml.MarkedYAMLError as exc:
        return _syntax_problem(shown, text, exc)
    except ReaderError as exc:
        return _character_problem(shown, text, exc)
    except yaml.YAMLError as exc:
        return Problem(shown, 1, 1, f"YAML syntax error: {exc}")
    except RecursionError:  # the bounds make this unreachable, unless lifted
        return Problem(shown, 1, 1, NESTED)
    return doc


# The usual slips, by how the parser's problem starts (libyaml's words, or PyYAML's own where
# libyaml is missing) and what is where it gave up ("" for anything; "indent" for the start of
# a line indented unlike its block): whether the mistake is where the key, quote or bracket
# began (the context mark) rather than where the parser gave up, and what to write instead.
# WHERE becomes the place where it gave up.
_TAB = "YAML does not allow a tab here; use spaces"
_UNQUOTED = "this character cannot start an unquoted value; quote the value"
_NO_COLON = "this line is not 'key: value'; add ': ' after the key"
_UNCLOSED = "this quoted string is never closed; close it"
_OPEN = "this '{0}' is not closed before WHERE; close it with '{1}'"
_CLOSE = "this '{1}' closes no '{0}'; remove it"
_INDENT = "this line's indentation matches no level above it; indent it like its neighbours"
_COLON = "': ' cannot be part of an unquoted value; quote the value, or fix the indentation"
_ITEM = "a list item ('- ') must start its own line"
_NOT_ITEM = (
    "this line is indented like the list's items but is not one; indent it under the item "
    "above, or start it with '- '"
)
_ITEM_AFTER_KEYS = (
    "a list item ('- ') cannot follow keys at the same indentation; remove the '- ', or put "
    "the list under a key of its own"
)
_ESCAPE = "this escape is not one YAML knows; write '\\\\' for a backslash, or use single quotes"
_EXPECTED = ("did not find expected", "expected <block end>")
_SLIPS: tuple[tuple[tuple[str, ...], str, bool, str], ...] = (
    (("found character", "found a tab character"), "\t", False, _TAB),
    (("found character",), "", False, _UNQUOTED),
    (("could not find expected ':'",), "", True, _NO_COLON),
    (("found unexpected end of stream",), "", True, _UNCLOSED),
    (("did not find expected ',' or ']'", "expected ',' or ']'"), "", True, _OPEN.format("[", "]")),
    (("did not find expected ',' or '}'", "expected ',' or '}'"), "", True, _OPEN.format("{", "}")),
    (_EXPECTED, "]", False, _CLOSE.format("[", "]")),
    (_EXPECTED, "}", False, _CLOSE.format("{", "}")),
    (("did not find expected key", "did not find expected '-'"), "indent", False, _INDENT),
    (("did not find expected '-'",), "", False, _NOT_ITEM),
    (("did not find expected key",), "-", False, _ITEM_AFTER_KEYS),
    (("found unknown escape character",), "", False, _ESCAPE),
    (("expected <block end>, but found '<block",), "", False, _INDENT),
    (("mapping values are not allowed",), "", False, _COLON),
    (("block sequence entries are not", "sequence entries are not"), "", False, _ITEM),
)


def _syntax_problem(shown: str, text: str, exc: yaml.MarkedYAMLError) -> Problem:
    problem, end, start = exc.problem or "", exc.problem_mark, exc.context_mark
    found = _found(text, end, start)
    for prefixes, what, at_start, sentence in _SLIPS:
        mark = start if at_start else end
        if problem.startswith(prefixes) and what in found and mark is not None and end is not None:
            where = f"line {end.line + 1} column {end.column + 1}"
            if not text[end.index :].strip():
                where = "the end of the file"
            sentence = sentence.replace("WHERE", where)
            return Problem(shown, mark.line + 1, mark.column + 1, f"YAML syntax error: {sentence}")
    mark = end or start
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.problem and exc.context and start is not None:
        message += f" ({exc.context} at line {start.line + 1})"
    return Problem(shown, line, col, message)


def _found(text: str, end: Mark | None, start: Mark | None) -> set[str]:
    """What is where the parser gave up, in the words of _SLIPS' second column."""
    if end is None:
        return {""}
    line_start = text.rfind("\n", 0, end.index) + 1
    starts_line = not text[line_start : end.index].strip(" ")
    indented = starts_line and start is not None and start.column != end.column
    return {"", text[end.index : end.index + 1], "indent" if indented else ""}


def _character_problem(shown: str, text: str, exc: ReaderError) -> Problem:
    """libyaml counts the offset of a character it refuses in UTF-8 bytes."""
    before = text.encode("utf-8")[: exc.position].decode("utf-8", "replace")
    line = before.count("\n") + 1
    message = f"YAML syntax error: the character U+{exc.character:04X} is not allowed in YAML"
    return Problem(shown, line, len(before) - before.rfind("\n"), f"{message}; remove it")


def _plain(node: Node, loc: Loc, doc: Document) -> object:
    """The dicts and lists pydantic validates, each alias a copy; positions into ``doc``."""
    if isinstance(node, Seq):
        items = []
        for index, item in enumerate(node.items):
            here = (*loc, index)
            doc.at[here] = item.at
            items.append(_plain(item, here, doc))
        return items
    if isinstance(node, Map):
        mapping = {}
        for key, key_at, value, value_at in _merged(node):
            here = (*loc, key)
            doc.keys[here] = key_at
            doc.at[here] = value_at
            mapping[key] = _plain(value, here, doc)
        return mapping
    return node.value if isinstance(node, Scalar) else None


def _merged(node: Map) -> list[Entry]:
    """A mapping's entries, with those of a ``<<`` merge in its place, as YAML's merge key has
    it: a key written in the mapping wins, then the first merged mapping that has it. A merged
    key has no position of its own, so it takes the ``<<``'s."""
    keys = [key for key, _, _, _ in node.entries]
    if MERGE not in keys:
        return node.entries
    index = keys.index(MERGE)
    _, at, source, _ = node.entries[index]
    taken = set(keys)
    pulled: list[Entry] = []
    for merged in source.items if isinstance(source, Seq) else [source]:
        if not isinstance(merged, Map):
            raise Refused(at, _MERGED)
        for key, _, value, _ in _merged(merged):
            if key not in taken:
                taken.add(key)
                pulled.append((key, at, value, at))
    return node.entries[:index] + pulled + node.entries[index + 1 :]
