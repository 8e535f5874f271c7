"""A YAML file read with positions, and problems located in it.

ruamel.yaml's round-trip loader keeps the line and column of every key and item; we copy the
document into plain Python values (what pydantic validates) and keep those positions beside
it, keyed by the same ``loc`` tuples pydantic puts in its errors.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gateway.policy.amounts import show

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


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
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
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
        raw = path.read_bytes()
    except OSError as exc:
        return Problem(shown, 0, 0, f"cannot read: {exc.strerror or exc}")
    doc = Document(path, shown, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Problem(shown, 0, 0, "is not UTF-8 text")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a reused anchor: legal YAML, not our problem
            tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        return _syntax_problem(shown, exc)
    except YAMLError as exc:
        return Problem(shown, 1, 1, f"YAML syntax error: {exc}")
    if tree is None:
        return Problem(shown, 1, 1, "the file is empty")
    doc.at[()] = (tree.lc.line + 1, tree.lc.col + 1) if isinstance(tree, CommentedMap) else (1, 1)
    doc.data = _plain(tree, (), doc)
    return doc


def _syntax_problem(shown: str, exc: MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    text = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.problem and exc.context and exc.context_mark is not None:
        text += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return Problem(shown, line, col, text)


def _plain(node: object, loc: Loc, doc: Document) -> object:
    if isinstance(node, CommentedMap):
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
            out[key] = _plain(value, here, doc)
        return out
    if isinstance(node, CommentedSeq):
        items: list[object] = []
        for index, value in enumerate(node):
            line, col = node.lc.data.get(index, [node.lc.line, node.lc.col])
            doc.at[(*loc, index)] = (line + 1, col + 1)
            items.append(_plain(value, (*loc, index), doc))
        return items
    # ruamel's scalar subclasses remember formatting; pydantic's strict mode wants the base types.
    for base in (bool, int, float, str):
        if isinstance(node, base):
            return base(node)
    return node


def validate(doc: Document, model: type[M]) -> M | list[Problem]:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
    # "unknown key 'limts' (did you mean 'limits'?)" already says that limits is missing.
    misspelt = {
        (*error["loc"][:-1], suggestion)
        for error in errors
        if error["type"] == "extra_forbidden"
        for suggestion in _close(str(error["loc"][-1]), model, tuple(error["loc"][:-1]))
    }
    return [
        _problem(doc, model, error)
        for error in errors
        if not (error["type"] == "missing" and tuple(error["loc"]) in misspelt)
    ]


def _close(name: str, model: type[BaseModel], parent: Loc) -> list[str]:
    return difflib.get_close_matches(name, _fields_at(model, parent), n=1)


def _problem(doc: Document, model: type[BaseModel], error: ErrorDetails) -> Problem:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return doc.problem(loc, f"required key '{loc[-1]}' is missing")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        message = f"unknown key {name!r}"
        close = _close(name, model, loc[:-1])
        if close:
            message += f" (did you mean {close[0]!r}?)"
        return doc.problem(loc, message, key=True)
    return doc.problem(doc.existing(loc), _message(kind, error.get("input"), error))


def _message(kind: str, value: object, error: ErrorDetails) -> str:
    ctx = error.get("ctx", {})
    expected = _EXPECTED.get(kind)
    if expected is not None:
        message = f"expected {expected}, got {_describe(value)}"
        if kind == "string_type" and isinstance(value, bool | int | float):
            message += f"; quote it: {show(show(value))}"
        return message
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "literal_error":
        return f"{show(value)} is not allowed; use {ctx['expected']}"
    if kind == "too_short":
        return (
            "must not be empty"
            if ctx["min_length"] == 1
            else (f"needs at least {ctx['min_length']} entries")
        )
    if kind == "too_long":
        return f"takes at most {ctx['max_length']} entry"
    if kind == "greater_than_equal":
        return f"{show(value)} is too small; the least allowed is {ctx['ge']}"
    if kind == "less_than_equal":
        return f"{show(value)} is too large; the most allowed is {ctx['le']}"
    return str(error["msg"])


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
}


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, bool | int | float | str):
        return show(value)
    return f"{type(value).__name__} {value}"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the schema allows at ``loc``, for did-you-mean."""
    annotation: object = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = annotation.model_fields.get(str(part))
            if found is None:
                return []
            annotation = found.annotation
        else:
            args = typing.get_args(annotation)  # list[X] → X; dict[K, V] → V
            if not args:
                return []
            annotation = args[-1]
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: object) -> object:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            annotation = args[0]
        else:
            return annotation
