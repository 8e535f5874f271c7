from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.amounts import GRAMMAR, MAX_AMOUNT, parse_amount, parse_limit
from gateway.policy.keys import hash_api_key
from gateway.policy.model import Limit, Metric, Unit


@pytest.mark.parametrize(
    ("text", "amount"),
    [("0", 0), ("60", 60), ("200k", 200_000), ("5M", 5_000_000), ("2B", 2_000_000_000),
     ("1_000_000", 1_000_000), ("1_500k", 1_500_000)],
)  # fmt: skip
def test_amounts(text: str, amount: int) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize("text", ["", "k", "5 M", "1.5k", "-1", "5m", "5K", "1__0", "_1", "1_"])
def test_not_amounts(text: str) -> None:
    assert parse_amount(text) is None


def test_rate_limit() -> None:
    assert parse_limit(Metric.TOKENS, "200k/minute") == Limit(Metric.TOKENS, 200_000, Unit.MINUTE)
    assert parse_limit(Metric.REQUESTS, "0/month") == Limit(Metric.REQUESTS, 0, Unit.MONTH)


def test_concurrent_is_a_bare_count() -> None:
    assert parse_limit(Metric.CONCURRENT, 8) == Limit(Metric.CONCURRENT, 8, None)
    assert parse_limit(Metric.CONCURRENT, "1k") == Limit(Metric.CONCURRENT, 1000, None)
    assert parse_limit(Metric.CONCURRENT, 0).text == "0"


def test_a_bad_limit_shows_the_grammar() -> None:
    with pytest.raises(ValueError) as caught:
        parse_limit(Metric.TOKENS, "5 M/day")
    assert str(caught.value) == (
        f'"5 M/day" is not a limit; write AMOUNT/UNIT, e.g. 200k/minute ({GRAMMAR})'
    )


@pytest.mark.parametrize(
    ("metric", "value", "message"),
    [
        (Metric.REQUESTS, 60, "60 has no unit; write AMOUNT/UNIT, e.g. 60/minute"),
        (Metric.REQUESTS, "60/minutes", 'unknown unit "minutes" (did you mean minute?)'),
        (Metric.REQUESTS, "1/week", 'unknown unit "week"'),
        (Metric.REQUESTS, True, "true is not a limit"),
        (Metric.REQUESTS, 1.5, "1.5 is not a limit"),
        (Metric.REQUESTS, "-1/minute", '"-1/minute" is not a limit'),
        (Metric.REQUESTS, "60", '"60" is not a limit'),
        (Metric.CONCURRENT, -1, "-1 is negative"),
        (Metric.CONCURRENT, "8/minute", "takes no unit"),
        (Metric.CONCURRENT, 2.0, "2.0 is not a count"),
        (Metric.CONCURRENT, None, "null is not a count"),
        (Metric.TOKENS, f"{MAX_AMOUNT + 1}/day", "is too large"),
    ],
)
def test_bad_limits(metric: Metric, value: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_limit(metric, value)


@given(
    st.integers(min_value=0, max_value=9_999_999),
    st.sampled_from(["", "k", "M"]),
    st.sampled_from(list(Unit)),
)
def test_any_written_limit_parses_to_its_value(number: int, suffix: str, unit: Unit) -> None:
    scale = {"": 1, "k": 1_000, "M": 1_000_000}[suffix]
    limit = parse_limit(Metric.TOKENS, f"{number:_}{suffix}/{unit.value}")
    assert (limit.amount, limit.unit) == (number * scale, unit)
    assert parse_limit(Metric.TOKENS, limit.text) == limit  # Limit.text reads back


def test_hash_api_key_is_sha256_hex() -> None:
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
