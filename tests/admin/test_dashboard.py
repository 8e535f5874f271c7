"""The dashboard's API: top spenders, refusals per minute, the shadow report, time left on
overrides, and the page's files (real app, memory:// unless replicas share Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.admin.pages import CONTENT_SECURITY_POLICY
from gateway.app import create_admin_app
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.model import Metric, Mode, Scope, Unit
from gateway.settings import Settings
from tests.admin.conftest import AUTH, TOKEN, Gateway, in_process, message, small_policies
from tests.budget.helpers import limit, policy, policy_set
from tests.servers import running

OUTPUT = 20  # tokens the mock answers with


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with running(create_mock_app(MockConfig(output_tokens=OUTPUT, token_delay_s=0))) as url:
        yield url


@pytest.fixture
async def gw(upstream: str) -> AsyncIterator[Gateway]:
    settings = Settings(upstream=upstream, admin_token=TOKEN)
    async with in_process(settings, small_policies()) as gateway:
        yield gateway


async def send(gw: Gateway, account: str, organization: str = "org-1", times: int = 1) -> None:
    for _ in range(times):
        response = await gw.client.post("/v1/messages", **message(account, organization))
        assert response.status_code in (200, 429), response.text


async def test_top_spenders_rank_by_tokens_and_show_the_day_limits(gw: Gateway) -> None:
    await send(gw, "acct-big", "org-a", times=3)
    await send(gw, "acct-small", "org-b")
    await send(gw, "acct-mid", "org-a", times=2)
    body = (await gw.admin.get("/v1/spenders?limit=2", headers=AUTH)).json()
    accounts = body["scopes"]["account"]
    assert [row["id"] for row in accounts] == ["acct-big", "acct-mid"]
    big, mid = accounts
    assert big["tokens"] * 2 == mid["tokens"] * 3 > 0
    assert big["tokens_at_least"] == big["tokens"]  # a few ids: no slot was ever recycled
    limits = {row["metric"]: row for row in big["limits"]}
    assert limits["requests"]["used"] == 3 and limits["requests"]["remaining"] == 97
    assert limits["tokens"]["used"] == big["tokens"]  # one replica: its tally is the store's
    assert limits["tokens"]["limit"] == "10000/day" and limits["tokens"]["policy"] == "acct"
    organizations = body["scopes"]["organization"]
    assert [row["id"] for row in organizations] == ["org-a", "org-b"]
    assert organizations[0]["tokens"] == big["tokens"] + accounts[1]["tokens"]
    assert body["scopes"]["cluster"] == []  # nobody is linked


async def test_refused_requests_are_not_spend_but_are_counted_per_policy(gw: Gateway) -> None:
    block = {"limits": {"requests": "0/minute"}}
    await gw.admin.put("/v1/overrides/account/acct-1", json=block, headers=AUTH)
    await send(gw, "acct-1", times=3)
    await send(gw, "acct-2")
    spenders = (await gw.admin.get("/v1/spenders", headers=AUTH)).json()
    assert [row["id"] for row in spenders["scopes"]["account"]] == ["acct-2"]
    refusals = (await gw.admin.get("/v1/refusals", headers=AUTH)).json()
    assert refusals["minutes"] == 60
    [series] = refusals["series"]
    assert (series["reason"], series["policy"], series["total"]) == ("rate_limit", "acct", 3)
    assert series["per_minute"][-1] == 3 and sum(series["per_minute"]) == 3


async def test_authentication_refusals_have_a_reason_and_no_policy(gw: Gateway) -> None:
    await gw.client.post("/v1/messages", json=message()["json"])  # no account header
    refusals = (await gw.admin.get("/v1/refusals", headers=AUTH)).json()
    assert [(s["reason"], s["policy"], s["total"]) for s in refusals["series"]] == [
        ("authentication", "", 1)
    ]


async def test_overrides_show_their_time_left(gw: Gateway) -> None:
    body = {"limits": {"tokens": "5M/day"}, "ttl_seconds": 3600}
    await gw.admin.put("/v1/overrides/account/acct-1", json=body, headers=AUTH)
    await gw.admin.put(
        "/v1/overrides/organization/org-1", json={"limits": body["limits"]}, headers=AUTH
    )
    listed = (await gw.admin.get("/v1/overrides", headers=AUTH)).json()["overrides"]
    left = {o["id"]: o["seconds_left"] for o in listed}
    assert 3500 < left["acct-1"] <= 3600
    assert left["org-1"] is None  # until cleared


async def test_shadow_report_names_the_policy_and_the_ids(upstream: str) -> None:
    policies = policy_set(
        policy("acct", limit(Metric.REQUESTS, 100, Unit.DAY)),
        policy("trial", limit(Metric.REQUESTS, 1, Unit.DAY), mode=Mode.SHADOW),
        policy(
            "org-trial",
            limit(Metric.TOKENS, 10, Unit.DAY),
            scope=Scope.ORGANIZATION,
            mode=Mode.SHADOW,
        ),
    )
    settings = Settings(upstream=upstream, admin_token=TOKEN)
    async with in_process(settings, policies) as gw:
        empty = (await gw.admin.get("/v1/shadow", headers=AUTH)).json()
        assert [(p["policy"], p["refusals"]) for p in empty["policies"]] == [
            ("org-trial", 0),
            ("trial", 0),
        ]
        await send(gw, "acct-1", times=3)  # all admitted: shadow policies refuse nobody
        report = await _shadow_once_flushed(gw, "trial", 2)
        trial = next(p for p in report["policies"] if p["policy"] == "trial")
        assert trial == trial | {"scope": "account", "refusals": 2, "ids": 1}
        assert {"policy": "trial", "scope": "account", "id": "acct-1", "refusals": 2}.items() <= (
            next(t for t in report["top"] if t["policy"] == "trial").items()
        )


async def _shadow_once_flushed(gw: Gateway, name: str, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5  # the recorder flushes every second
    while True:
        report: dict[str, Any] = (await gw.admin.get("/v1/shadow", headers=AUTH)).json()
        if any(p["policy"] == name and p["refusals"] == count for p in report["policies"]):
            return report
        assert time.monotonic() < deadline, report
        await asyncio.sleep(0.05)


async def raw_status(gw: Gateway, path: str) -> int:
    """The status the admin app answers for ``path`` exactly as given (httpx would resolve
    the dot segments before sending)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"admin")],
        "client": ("127.0.0.1", 5000),
        "server": ("admin", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await create_admin_app(gw.proxy)(scope, receive, send)
    return int(sent[0]["status"])


@pytest.mark.parametrize("path", ["/v1/spenders", "/v1/refusals", "/v1/shadow"])
async def test_no_data_without_the_token(gw: Gateway, path: str) -> None:
    response = await gw.admin.get(path)
    assert response.status_code == 401
    wrong = await gw.admin.get(path, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x"])
async def test_a_bad_limit_is_400(gw: Gateway, query: str) -> None:
    response = await gw.admin.get(f"/v1/spenders?{query}", headers=AUTH)
    assert response.status_code == 400 and "limit must be" in response.json()["error"]["message"]


async def test_the_page_loads_without_a_token_under_a_strict_policy(gw: Gateway) -> None:
    page = await gw.admin.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (
        "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    )
    assert 'type="password"' in page.text and "<script>" not in page.text
    script = await gw.admin.get("/ui/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in script.text
    assert await raw_status(gw, "/ui/../v1/audit") == 404  # as a raw target, not normalised
    assert await raw_status(gw, "/ui/%2e%2e/v1/audit") == 404
    assert (await gw.admin.get("/ui/secrets.txt")).status_code == 404
    bare = await gw.admin.get("/ui")
    assert bare.status_code in (307, 308) and bare.headers["location"].endswith("/ui/")
    # Only the dashboard's own folder is open: a path that merely starts with "/ui" is not.
    assert (await gw.admin.get("/uix")).status_code == 401


async def test_replicas_rank_what_they_saw_and_report_what_all_spent(
    upstream: str, redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    settings = Settings(upstream=upstream, storage=redis_url, admin_token=TOKEN)
    async with (
        in_process(settings, small_policies()) as a,
        in_process(settings, small_policies()) as b,
    ):
        await send(a, "acct-1", times=2)
        await send(b, "acct-1", times=3)
        await send(b, "acct-2")
        seen_by_a = (await a.admin.get("/v1/spenders", headers=AUTH)).json()["scopes"]["account"]
        assert [row["id"] for row in seen_by_a] == ["acct-1"]
        requests = next(r for r in seen_by_a[0]["limits"] if r["metric"] == "requests")
        assert requests["used"] == 5  # both replicas' requests, read from Redis
        tokens = next(r for r in seen_by_a[0]["limits"] if r["metric"] == "tokens")
        assert tokens["used"] == seen_by_a[0]["tokens"] * 5 // 2
