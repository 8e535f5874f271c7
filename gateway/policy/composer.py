"""libyaml's parse events → a tree of values with positions, refusing what a policy may not use.

PyYAML hands over libyaml's events (a scalar, the start of a list, an alias...), each with its
line and column. This puts them together as YAML's composer would, one event at a time and
without recursion, and stops at the first event that crosses a bound or uses what a policy has
no use for: a tag, a key that is not a scalar, a key given twice, a second document. An alias
is its anchor's node again, whose size and height are known by then, so a bomb of aliases is
counted without being expanded.

Unquoted scalars mean what YAML 1.2 says (``yes`` and ``on`` are strings, ``017`` is 17), or
YAML 1.1 under a ``%YAML 1.1`` directive; both read ``2024-01-01`` as a date, which pydantic's
strict mode refuses where a string is expected rather than quietly taking it as one.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import date
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

# The format nests 8 levels at most; composing does not recurse, but making dicts and lists
# of the tree does.
MAX_DEPTH = 64
# Each use of an alias copies its anchor: nine anchors of nine aliases each make 387 million
# values from 300 bytes. A 1 MiB policy file written out holds under 100,000.
MAX_VALUES = 100_000

NESTED = f"nested more than {MAX_DEPTH} levels deep; no policy file needs more than 8"
EXPANDS = (
    f"the file expands to more than {MAX_VALUES:,} values (each use of a YAML alias repeats "
    "its anchor's content); use fewer aliases"
)
KEY = "a key must be written out: not a list, a mapping or an alias"
TAGGED = (
    "YAML tags are not allowed; write the value without the tag (quote it if it must be a string)"
)
REPEATED = "YAML syntax error: this key is already in this mapping; keep one"
SECOND = "YAML syntax error: a policy file is one YAML document; remove this '---'"
RECURSIVE = "*{0} is inside &{0}, so it would repeat itself without end; remove it"
UNDEFINED = "YAML syntax error: *{0} names no &{0} above; define that anchor, or write the value"

# libyaml when PyYAML was built with it (its wheels are); else PyYAML's own parser, which
# gives the same events some ten times slower.
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Position = tuple[int, int]  # 1-based line and column
Entry = tuple[Any, Position, "Node", Position]


class Refused(Exception):
    """Legal YAML a policy file may not use, or a bound crossed: where, and the problem; with
    the ``loc`` of the value it is about, when it is about one."""

    def __init__(self, at: Position, text: str, loc: tuple[Any, ...] | None = None) -> None:
        self.at, self.text, self.loc = at, text, loc


class Node:
    """A value and where it starts; ``size`` counts the values it expands to (itself too, 0
    while open) and ``height`` the levels under it, so each use by an alias is one step."""

    __slots__ = ("at", "height", "size")

    def __init__(self, at: Position, size: int = 0) -> None:
        self.at, self.size, self.height = at, size, 0


class Scalar(Node):
    __slots__ = ("value",)

    def __init__(self, at: Position, value: object) -> None:
        self.at, self.size, self.height, self.value = at, 1, 0, value


class Seq(Node):
    __slots__ = ("items",)

    def __init__(self, at: Position) -> None:
        super().__init__(at)
        self.items: list[Node] = []


class Map(Node):
    """Entries: key, its position, value, its position (a list's or mapping's: the key's)."""

    __slots__ = ("entries",)

    def __init__(self, at: Position) -> None:
        super().__init__(at)
        self.entries: list[Entry] = []


def compose(text: str, *, max_depth: int, max_values: int) -> Node | None:
    """The document's root, or None for a file of comments; Refused, or PyYAML's errors."""
    composer = _Composer(text, max_depth, max_values)
    try:
        return composer.document()
    except yaml.MarkedYAMLError as exc:
        if exc.problem == "exceeded maximum nesting depth":
            raise composer.too_deep(exc) from exc
        raise
    finally:
        composer.events.dispose()


class _Merge:
    """The key of a ``<<`` entry, whose value's entries the mapping takes as its own (see
    ``source``); the key ``'<<'``, quoted, is a string like any other."""

    def __str__(self) -> str:
        return "<<"


MERGE = _Merge()


class _Open:
    """A list or mapping whose end has not come yet."""

    __slots__ = ("flow", "key", "key_at", "keys", "node", "wants_key")

    def __init__(self, node: Seq | Map, flow: bool) -> None:
        self.node, self.flow = node, flow
        self.wants_key = isinstance(node, Map)
        self.key: Any = None  # the key whose value is being read, or was read last
        self.key_at = (0, 0)
        self.keys: set[Any] = set()


def _at(mark: Any) -> Position:
    return (mark.line + 1, mark.column + 1)


class _Composer:
    def __init__(self, text: str, max_depth: int, max_values: int) -> None:
        self.text, self.max_depth, self.max_values = text, max_depth, max_values
        self.events = _PARSER(text)
        self.stack: list[_Open] = []
        self.flow = 0  # how many of the open lists and mappings are [...] or {...}
        self.anchors: dict[str, Node] = {}
        self.values = 0  # so far, each use of an alias counted in full
        self.resolve: Callable[[str], object] = _plain_1_2
        self.last: Any = None  # the event taken last

    def document(self) -> Node | None:
        get = self.events.get_event
        get()  # the stream's start
        start = get()
        if isinstance(start, StreamEndEvent):
            return None
        if start.version == (1, 1):
            self.resolve = functools.partial(_scalar, rules=_1_1)
        root = None
        while root is None:
            self.last = event = get()
            root = self.step(event)
        get()  # the document's end
        after = get()
        if isinstance(after, DocumentStartEvent):
            raise Refused(_at(after.start_mark), SECOND)
        return root

    def step(self, event: Any) -> Node | None:
        """Take one event; return the root once it is complete."""
        stack = self.stack
        if isinstance(event, CollectionEndEvent):
            closed = stack.pop()
            self.close(closed)
            return None if stack else closed.node
        top = stack[-1] if stack else None
        if top is not None and top.wants_key:
            self.key(top, event)
            return None
        node = self.alias(top, event) if type(event) is AliasEvent else self.node(top, event)
        if top is None:
            return node if isinstance(node, Scalar) else None
        parent = top.node
        if isinstance(parent, Seq):
            parent.items.append(node)
        else:
            at = node.at if isinstance(node, Scalar) else top.key_at
            parent.entries.append((top.key, top.key_at, node, at))
            top.wants_key = True
        return None

    def key(self, top: _Open, event: Any) -> None:
        at = _at(event.start_mark)
        if type(event) is not ScalarEvent:
            raise Refused(at, KEY)
        if event.tag is not None:
            raise Refused(at, TAGGED)
        if len(self.stack) >= self.max_depth:
            raise Refused(at, NESTED)
        key = self.resolve(event.value) if event.implicit[0] else event.value
        if event.implicit[0] and key == "<<":
            key = MERGE
        if key in top.keys:
            raise Refused(at, REPEATED)
        top.keys.add(key)
        top.key, top.key_at, top.wants_key = key, at, False
        if event.anchor is not None:
            self.anchors[event.anchor] = Scalar(at, "<<" if key is MERGE else key)

    def node(self, top: _Open | None, event: Any) -> Node:
        at = _at(event.start_mark)
        if event.tag is not None:
            raise Refused(at, TAGGED)
        node: Node
        if type(event) is ScalarEvent:
            if len(self.stack) >= self.max_depth:
                raise Refused(at, NESTED)
            node = Scalar(at, self.resolve(event.value) if event.implicit[0] else event.value)
            self.count(top, node, 1)
        else:
            # [...] and {...} are bounded by how many are open, as libyaml bounds them (see
            # too_deep): a line of a thousand '[' is refused at the 65th, wherever it starts.
            flow = bool(event.flow_style)
            if (self.flow if flow else len(self.stack)) >= self.max_depth:
                raise Refused(at, NESTED)
            node = opened = Map(at) if isinstance(event, MappingStartEvent) else Seq(at)
            self.count(top, node, 1)
            self.stack.append(_Open(opened, flow))
            self.flow += flow
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        return node

    def alias(self, top: _Open | None, event: Any) -> Node:
        name = event.anchor
        node = self.anchors.get(name)
        if node is None:
            raise Refused(_at(event.start_mark), UNDEFINED.format(name))
        if node.size == 0:
            raise Refused(_at(event.start_mark), RECURSIVE.format(name), self.loc())
        if len(self.stack) + node.height >= self.max_depth:
            raise Refused(self.where(top, node), NESTED, self.loc())
        self.count(top, node, node.size)
        return node

    def count(self, top: _Open | None, node: Node, values: int) -> None:
        self.values += values
        if self.values > self.max_values:
            raise Refused(self.where(top, node), EXPANDS, self.loc())

    def close(self, frame: _Open) -> None:
        node = frame.node
        self.flow -= frame.flow
        children = node.items if isinstance(node, Seq) else [entry[2] for entry in node.entries]
        # A ``<<`` entry counts its whole value, which holds at least the values it merges.
        node.size = 1 + sum(child.size for child in children)
        node.height = 1 + max((child.height for child in children), default=-1)

    def loc(self) -> tuple[Any, ...]:
        """Where the value being read goes."""
        last = self.stack[-1] if self.stack else None
        return tuple(
            len(frame.node.items) - (frame is not last)
            if isinstance(frame.node, Seq)
            else frame.key
            for frame in self.stack
        )

    def where(self, top: _Open | None, node: Node) -> Position:
        """Where the document will place the value being read: a list or map at its key."""
        if top is not None and isinstance(top.node, Map) and not isinstance(node, Scalar):
            return top.key_at
        return node.at

    def too_deep(self, exc: yaml.MarkedYAMLError) -> Refused:
        """libyaml stops at a thousand open brackets while it looks ahead for a ':', before
        their events come; find among them the one that crosses our own bound."""
        start = self.last.end_mark.index if self.last is not None else 0
        end = exc.problem_mark.index + 1 if exc.problem_mark is not None else len(self.text)
        level = self.flow
        for token in _FLOW_TOKEN.finditer(self.text, start, end):
            level += _BRACKETS.get(token[0], 0)
            if level > self.max_depth:
                index = token.start()
                line = self.text.count("\n", 0, index) + 1
                return Refused((line, index - self.text.rfind("\n", 0, index)), NESTED)
        return Refused((1, 1), NESTED)  # a bound lifted past libyaml's


# What may lie between events: brackets, and the quoted strings and comments that hold some.
_FLOW_TOKEN = re.compile(
    r"""(?<![^\s\[{,:])(?:'(?:[^']|'')*'|"(?:[^"\\]|\\.)*")|(?<!\S)\#[^\n]*|[\[\]{}]""",
    re.DOTALL,
)
_BRACKETS = {"[": 1, "{": 1, "]": -1, "}": -1}


class _Rules(NamedTuple):
    """What an unquoted scalar means in one YAML version."""

    words: dict[str, object]  # null, booleans, infinity and not-a-number, spelt out
    floats: re.Pattern[str]
    ints: re.Pattern[str]
    octal_zero: bool  # 017 is fifteen, and 1:30 ninety (base 60)


_WORDS: dict[str, object] = {
    **dict.fromkeys(["", "~", "null", "Null", "NULL"], None),
    **dict.fromkeys(["true", "True", "TRUE"], True),
    **dict.fromkeys(["false", "False", "FALSE"], False),
    **dict.fromkeys([".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"], math.inf),
    **dict.fromkeys(["-.inf", "-.Inf", "-.INF"], -math.inf),
    **dict.fromkeys([".nan", ".NaN", ".NAN"], math.nan),
}
_FLOAT = r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
_1_2 = _Rules(
    _WORDS,
    re.compile(_FLOAT + r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?"),
    re.compile(r"[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9_]+)"),
    octal_zero=False,
)
_1_1 = _Rules(
    {
        **_WORDS,
        **dict.fromkeys(["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"], True),
        **dict.fromkeys(["n", "N", "no", "No", "NO", "off", "Off", "OFF"], False),
    },
    re.compile(
        _FLOAT + r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    ),
    re.compile(r"[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0?[0-7_]+|[1-9][0-9_]*(?::[0-5]?[0-9])*)"),
    octal_zero=True,
)
_TIMESTAMP = re.compile(
    r"""[0-9]{4}-[0-9]{2}-[0-9]{2}
       |[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?
        (?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?""",
    re.X,
)
_NUMERIC = frozenset("-+.0123456789")
_SPECIAL_1_2 = frozenset({"", *_NUMERIC, *(word[0] for word in _WORDS if word)})
_BASES = {"0b": 2, "0o": 8, "0x": 16}
_CONSTRUCTOR = SafeConstructor()


def _plain_1_2(text: str) -> object:
    # Most keys and values, quickly: a word, or a number of a few digits.
    if text[:1] not in _SPECIAL_1_2:
        return text
    if text.isdigit() and text.isascii() and len(text) < 20:
        return int(text)
    return _scalar(text, _1_2)


def _scalar(text: str, rules: _Rules) -> object:
    """What an unquoted scalar means; one that looks like a number or a date but is not one
    (``0x_``, ``2024-13-45``) stays a string."""
    found = rules.words.get(text, text)
    if found is not text or text[0] not in _NUMERIC:
        return found
    try:
        if rules.floats.fullmatch(text):
            return _sexagesimal(text, float) if ":" in text else float(text.replace("_", ""))
        if rules.ints.fullmatch(text):
            return _int(text.replace("_", ""), rules.octal_zero)
        if _TIMESTAMP.fullmatch(text):
            timestamp: date = _CONSTRUCTOR.construct_yaml_timestamp(
                ScalarNode("tag:yaml.org,2002:timestamp", text)
            )
            return timestamp
    except ValueError:  # also past int()'s 4,300 digits
        pass
    return text


def _int(digits: str, octal_zero: bool) -> int:
    if ":" in digits:
        return int(_sexagesimal(digits, int))
    sign, digits = (-1, digits[1:]) if digits[0] == "-" else (1, digits.lstrip("+"))
    base = _BASES.get(digits[:2])
    if base:
        return sign * int(digits[2:], base)
    return sign * int(digits, 8 if octal_zero and len(digits) > 1 and digits[0] == "0" else 10)


def _sexagesimal(text: str, kind: Callable[[str], float]) -> float:
    digits = text.replace("_", "")
    value: float = 0
    for part in digits.lstrip("+-").split(":"):
        value = value * 60 + kind(part)
    return -value if digits[0] == "-" else value
