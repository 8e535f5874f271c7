"""``@value``: an immutable record that is built as fast as a plain one.

To the type checker a ``@value`` class is a frozen dataclass: mypy refuses any assignment
to its fields (``dataclass_transform(frozen_default=True)``). At run time it is a
``slots`` dataclass without ``frozen``, hashed by value as a frozen one is
(``unsafe_hash``). Why: a frozen dataclass's ``__init__`` sets every field through
``object.__setattr__``; five fields took 2.1 µs that way against 0.28 µs plainly
(timeit, this 2-core machine), and the request path and a replay build several such
values per exchange (decisions, limit statuses, bucket states, subjects, estimates):
12% of a replay worker's time went to those constructors (py-spy, docs/performance.md).

Nothing in the gateway assigns to a value after it is built (mypy strict proves it);
code outside the type checker that did would change it instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

from typing_extensions import dataclass_transform

_C = TypeVar("_C", bound=type)


@dataclass_transform(frozen_default=True)
def value(cls: _C) -> _C:
    return cast(_C, dataclass(slots=True, unsafe_hash=True)(cls))
