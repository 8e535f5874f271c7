from __future__ import annotations

import re

import pytest

from gateway.apis import ANTHROPIC, OPENAI, ErrorKind, error_format_for
from gateway.apis.anthropic import rfc3339
from gateway.apis.openai import go_duration
from gateway.budget.decision import LimitStatus
from gateway.policy.model import Limit, Metric, Scope, Unit

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def status(
    metric: Metric,
    amount: int,
    unit: Unit | None,
    remaining: int,
    reset: float = 30.0,
    policy: str = "default",
    scope: Scope = Scope.ACCOUNT,
) -> LimitStatus:
    return LimitStatus(policy, scope, Limit(metric, amount, unit), remaining, reset)


STATUSES = [
    status(Metric.REQUESTS, 60, Unit.MINUTE, 42, reset=12.3),
    status(
        Metric.REQUESTS,
        1000,
        Unit.DAY,
        100,
        reset=3600,
        policy="linked-accounts",
        scope=Scope.CLUSTER,
    ),
    status(Metric.TOKENS, 5_000_000, Unit.DAY, 4_000_000, reset=7200),
    status(Metric.INPUT_TOKENS, 100_000, Unit.MINUTE, 20_000, reset=48.5),
    status(Metric.OUTPUT_TOKENS, 20_000, Unit.MINUTE, 19_000, reset=3),
    status(Metric.CONCURRENT, 10, None, 2, reset=0),
]


@pytest.mark.parametrize(
    ("offset", "text"),
    [(0, "2026-01-01T00:00:00Z"), (0.2, "2026-01-01T00:00:01Z"), (3723, "2026-01-01T01:02:03Z")],
)
def test_rfc3339_is_utc_and_rounds_up(offset: float, text: str) -> None:
    assert rfc3339(NOW + offset) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.0001, "1ms"),
        (0.25, "250ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (2.3831, "2.384s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
        (86400, "24h0m0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_anthropic_headers_show_the_tightest_limit_per_metric() -> None:
    headers = dict(ANTHROPIC.rate_limit_headers(STATUSES, NOW))
    assert {name: value for name, value in headers.items() if name.startswith("anthropic-")} == {
        "anthropic-ratelimit-requests-limit": "1000",  # 100/1000 is tighter than 42/60
        "anthropic-ratelimit-requests-remaining": "100",
        "anthropic-ratelimit-requests-reset": "2026-01-01T01:00:00Z",
        "anthropic-ratelimit-tokens-limit": "5000000",
        "anthropic-ratelimit-tokens-remaining": "4000000",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T02:00:00Z",
        "anthropic-ratelimit-input-tokens-limit": "100000",
        "anthropic-ratelimit-input-tokens-remaining": "20000",
        "anthropic-ratelimit-input-tokens-reset": "2026-01-01T00:00:49Z",
        "anthropic-ratelimit-output-tokens-limit": "20000",
        "anthropic-ratelimit-output-tokens-remaining": "19000",
        "anthropic-ratelimit-output-tokens-reset": "2026-01-01T00:00:03Z",
    }


def test_openai_tokens_headers_take_the_tightest_token_metric() -> None:
    headers = OPENAI.rate_limit_headers(STATUSES, NOW)
    assert [h for h in headers if h[0].startswith("x-ratelimit-")] == [
        ("x-ratelimit-limit-requests", "1000"),
        ("x-ratelimit-remaining-requests", "100"),
        ("x-ratelimit-reset-requests", "1h0m0s"),
        ("x-ratelimit-limit-tokens", "100000"),
        ("x-ratelimit-remaining-tokens", "20000"),
        ("x-ratelimit-reset-tokens", "48.5s"),
    ]


def test_ietf_headers() -> None:
    headers = dict(OPENAI.rate_limit_headers(STATUSES, NOW))
    assert headers["ratelimit-policy"] == (
        '"requests-day";q=1000;w=86400, '
        '"tokens-day";q=5000000;w=86400;qu="x-tokens", '
        '"input-tokens-minute";q=100000;w=60;qu="x-input-tokens", '
        '"output-tokens-minute";q=20000;w=60;qu="x-output-tokens", '
        '"concurrent";q=10;qu="concurrent-requests"'
    )
    assert headers["ratelimit"] == (
        '"requests-day";r=100;t=3600, "tokens-day";r=4000000;t=7200, '
        '"input-tokens-minute";r=20000;t=49, "output-tokens-minute";r=19000;t=3, '
        '"concurrent";r=2'
    )
    assert dict(ANTHROPIC.rate_limit_headers(STATUSES, NOW))["ratelimit"] == headers["ratelimit"]


def test_ietf_headers_are_structured_field_lists() -> None:
    item = r'"[a-z-]+"(;[a-z]+=(\d+|"[a-z-]+"))+'
    headers = dict(ANTHROPIC.rate_limit_headers(STATUSES, NOW))
    for name in ("ratelimit-policy", "ratelimit"):
        assert re.fullmatch(rf"{item}(, {item})*", headers[name]), name


def test_headers_never_name_policies_or_scopes() -> None:
    for wire in (ANTHROPIC, OPENAI):
        values = " ".join(value for _, value in wire.rate_limit_headers(STATUSES, NOW))
        assert "linked" not in values
        assert "cluster" not in values
        assert "account" not in values


def test_concurrent_limits_stay_out_of_provider_headers() -> None:
    only = [status(Metric.CONCURRENT, 10, None, 0)]
    for wire in (ANTHROPIC, OPENAI):
        names = [name for name, _ in wire.rate_limit_headers(only, NOW)]
        assert names == ["ratelimit-policy", "ratelimit"]


def test_equal_shares_left_pick_the_smaller_remaining() -> None:
    statuses = [
        status(Metric.REQUESTS, 100, Unit.MINUTE, 10),
        status(Metric.REQUESTS, 50, Unit.SECOND, 5),
    ]
    headers = dict(OPENAI.rate_limit_headers(statuses, NOW))
    assert headers["x-ratelimit-remaining-requests"] == "5"
    assert headers["ratelimit"] == '"requests-second";r=5;t=30'


def test_overdrawn_limits_show_zero_remaining() -> None:
    headers = dict(ANTHROPIC.rate_limit_headers([status(Metric.TOKENS, 100, Unit.HOUR, -40)], NOW))
    assert headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert headers["ratelimit"] == '"tokens-hour";r=0;t=30'


def test_no_statuses_no_headers() -> None:
    assert ANTHROPIC.rate_limit_headers([], NOW) == []
    assert OPENAI.rate_limit_headers([], NOW) == []


@pytest.mark.parametrize(
    ("path", "wire"),
    [
        ("/v1/messages", ANTHROPIC),
        ("/v1/messages/batches", ANTHROPIC),
        ("/v1/complete?x=1", ANTHROPIC),
        ("/v1/messagesX", OPENAI),
        ("/v1/chat/completions", OPENAI),
        ("/v1/models", OPENAI),
    ],
)
def test_error_format(path: str, wire: object) -> None:
    assert error_format_for(path) is wire


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.INVALID_REQUEST),
        (422, ErrorKind.INVALID_REQUEST),
        (429, ErrorKind.RATE_LIMIT),
        (500, ErrorKind.API_ERROR),
        (502, ErrorKind.API_ERROR),
        (529, ErrorKind.OVERLOADED),
        (504, ErrorKind.TIMEOUT),
    ],
)
def test_error_kind_from_upstream_status(status: int, kind: ErrorKind) -> None:
    assert ErrorKind.from_status(status) is kind


def test_every_error_kind_has_its_status() -> None:
    statuses = {kind: kind.status for kind in ErrorKind}
    assert statuses[ErrorKind.OVERLOADED] == 503
    assert all(ErrorKind.from_status(status) is kind for kind, status in statuses.items())
