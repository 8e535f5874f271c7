"""Schema errors → problems located in the file: pydantic's ``loc`` tuples are the same
keys ``Document`` keeps positions under, so each error becomes ``file:line:col: path: what``,
with a did-you-mean for a mistyped key."""

from __future__ import annotations

import difflib
import types
import typing
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.policy.amounts import show
from gateway.policy.source import Document, Loc, Problem

M = TypeVar("M", bound=BaseModel)


# Problems reported per file. A file with thousands of mistakes is one mistake repeated;
# listing them all (each with a did-you-mean) took seconds and helped no one.
MAX_PROBLEMS = 100


def validate(doc: Document, model: type[M]) -> M | list[Problem]:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
    more = len(errors) - MAX_PROBLEMS
    errors = errors[:MAX_PROBLEMS]
    # "unknown key 'limts' (did you mean 'limits'?)" already says that limits is missing.
    misspelt = {
        (*error["loc"][:-1], suggestion)
        for error in errors
        if error["type"] == "extra_forbidden"
        for suggestion in _close(str(error["loc"][-1]), model, tuple(error["loc"][:-1]))
    }
    problems = [
        _problem(doc, model, error)
        for error in errors
        if not (error["type"] == "missing" and tuple(error["loc"]) in misspelt)
    ]
    if more > 0 and problems:
        last = max(problems, key=lambda problem: (problem.line, problem.col))
        text = f"and {more:,} more problems like these"
        problems.append(Problem(doc.shown, last.line, last.col + 1, text))
    return problems


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
    if kind == "invalid_key":  # YAML read the key as a number, null, true or a date
        key = error.get("input")
        return doc.problem((*loc[:-1], key), f"unknown key {show(key)}", key=True)
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
