"""The limit-string grammar: ``AMOUNT/UNIT`` for rates, a bare ``AMOUNT`` for ``concurrent``.

    AMOUNT  digits, optionally grouped with ``_``, then optionally k (1e3), M (1e6) or B (1e9)
    UNIT    second | minute | hour | day | month

Suffixes are case-sensitive on purpose: ``m`` would read as milli or minute.
"""

from __future__ import annotations

import difflib
import json
import re

from gateway.policy.model import Limit, Metric, Unit

GRAMMAR = "AMOUNT: digits with optional _ and k, M or B; UNIT: second, minute, hour, day or month"
# Counters live in Redis Lua numbers (doubles): above 2**53 an increment can be lost.
MAX_AMOUNT = 2**53 - 1

_AMOUNT = re.compile(r"(?P<digits>[0-9]+(?:_[0-9]+)*)(?P<suffix>[kMB]?)")
_SUFFIX = {"": 1, "k": 1_000, "M": 1_000_000, "B": 1_000_000_000}


def show(value: object) -> str:
    """A value as the YAML author wrote it: strings quoted, ``null``, ``true``/``false``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


def parse_amount(text: str) -> int | None:
    """``"200k"`` → 200000; None when ``text`` is not an AMOUNT."""
    found = _AMOUNT.fullmatch(text)
    if found is None:
        return None
    return int(found["digits"].replace("_", "")) * _SUFFIX[found["suffix"]]


def parse_limit(metric: Metric, text: str | int) -> Limit:
    """One limit on ``metric`` from its YAML value; ValueError says what to write instead."""
    if metric is Metric.CONCURRENT:
        return Limit(metric, _concurrent_amount(text), None)
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(_not_a_limit(text))
    if isinstance(text, int):
        raise ValueError(f"{show(text)} has no unit; write AMOUNT/UNIT, e.g. {text}/minute")
    amount_text, slash, unit_text = text.partition("/")
    amount = parse_amount(amount_text)
    if not slash or amount is None:
        raise ValueError(_not_a_limit(text))
    try:
        unit = Unit(unit_text)
    except ValueError:
        close = difflib.get_close_matches(unit_text, [unit.value for unit in Unit], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(
            f"{show(text)} has an unknown unit {show(unit_text)}{hint}; "
            "UNIT is second, minute, hour, day or month"
        ) from None
    return Limit(metric, _in_range(amount, text), unit)


def _concurrent_amount(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{value} is negative; concurrent takes 0 or more")
        return _in_range(value, value)
    if isinstance(value, str):
        amount = parse_amount(value)
        if amount is not None:
            return _in_range(amount, value)
        if "/" in value:
            raise ValueError(
                f"{show(value)}: concurrent counts requests in flight and takes no unit; "
                "write a bare integer, e.g. concurrent: 8"
            )
    raise ValueError(f"{show(value)} is not a count; concurrent takes a bare integer, e.g. 8")


def _in_range(amount: int, text: object) -> int:
    if amount > MAX_AMOUNT:
        raise ValueError(f"{show(text)} is too large; the largest amount is {MAX_AMOUNT}")
    return amount


def _not_a_limit(value: object) -> str:
    return f"{show(value)} is not a limit; write AMOUNT/UNIT, e.g. 200k/minute ({GRAMMAR})"
