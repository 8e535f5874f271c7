"""The route table: closed by default, exact (case included), placeholders one segment."""

from __future__ import annotations

import pytest

from gateway.apis import FAMILIES, FORMATS
from gateway.policy.routes import SHIPPED_ROUTES, Meter, merged, route
from gateway.routing import NotAllowed, RouteTable

TABLE = RouteTable(SHIPPED_ROUTES)


def test_every_metered_route_has_a_format_and_every_route_a_shape() -> None:
    for item in SHIPPED_ROUTES:
        assert item.errors in FAMILIES
        if item.meter.metered:
            assert FORMATS[item.meter].meter == item.meter
    assert set(FORMATS) == {meter.value for meter in Meter if meter.metered}


@pytest.mark.parametrize(
    ("method", "path", "meter"),
    [
        ("POST", "/v1/messages", Meter.ANTHROPIC_MESSAGES),
        ("POST", "/v1/messages/batches", Meter.ANTHROPIC_MESSAGE_BATCHES),
        ("GET", "/v1/messages/batches/msgbatch_01", Meter.PASS_THROUGH),
        ("POST", "/v1/messages/batches/msgbatch_01/cancel", Meter.PASS_THROUGH),
        ("POST", "/v1/chat/completions", Meter.OPENAI_CHAT_COMPLETIONS),
        ("POST", "/v1/responses", Meter.OPENAI_RESPONSES),
        ("GET", "/v1/models/gpt-4o:ft-acme:1", Meter.PASS_THROUGH),
        ("POST", "/v1/batches", Meter.BLOCKED),
    ],
)
def test_shipped_routes_match(method: str, path: str, meter: Meter) -> None:
    found = TABLE.find(method, path)
    assert not isinstance(found, NotAllowed) and found is not None
    assert found.meter is meter


@pytest.mark.parametrize(
    "path",
    [
        "/V1/messages",
        "/v1/messages/batches/a/b",
        "/v1/models/",
        "/v1/messages/count_tokens/x",
        "/anthropic/v1/messages",
        "/v1/chat/completions/x",
    ],
)
def test_anything_undeclared_matches_nothing(path: str) -> None:
    assert TABLE.find("POST", path) is None
    assert TABLE.find("GET", path) is None


def test_a_declared_path_under_another_method_is_not_allowed() -> None:
    assert TABLE.find("GET", "/v1/messages") == NotAllowed(("POST",))
    assert TABLE.find("PUT", "/v1/messages/batches/x") == NotAllowed(("DELETE", "GET"))


def test_declared_routes_replace_add_and_remove_shipped_ones() -> None:
    table = merged(
        SHIPPED_ROUTES,
        [
            route("POST", "/v1/messages", Meter.ANTHROPIC_MESSAGES, 512),
            route("POST", "/v1/batches", Meter.REQUESTS_ONLY),
            route("POST", "/v1/completions", Meter.OFF),
        ],
    )
    routes = RouteTable(table)
    messages = routes.find("POST", "/v1/messages")
    assert not isinstance(messages, NotAllowed) and messages is not None
    assert messages.default_max_output_tokens == 512
    batches = routes.find("POST", "/v1/batches")
    assert not isinstance(batches, NotAllowed) and batches is not None
    assert batches.meter is Meter.REQUESTS_ONLY
    assert routes.find("POST", "/v1/completions") is None


def test_an_exact_route_takes_its_own_method_and_leaves_the_others_to_patterns() -> None:
    table = RouteTable(
        merged(SHIPPED_ROUTES, [route("POST", "/v1/models/special", Meter.REQUESTS_ONLY)])
    )
    posted = table.find("POST", "/v1/models/special")
    got = table.find("GET", "/v1/models/special")
    assert not isinstance(posted, NotAllowed) and posted is not None
    assert not isinstance(got, NotAllowed) and got is not None
    assert (posted.meter, got.meter) == (Meter.REQUESTS_ONLY, Meter.PASS_THROUGH)
