"""The admin API in process (memory://): auth, bad input, overrides, usage, audit, OpenAPI."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from starlette.routing import Route

from gateway.admin.auth import hash_token
from gateway.admin.openapi import document
from gateway.app import create_admin_app, create_app
from gateway.settings import Settings
from tests.admin.conftest import AUTH, TOKEN, Gateway, in_process, message, small_policies
from tests.conftest import free_port

OPENAPI_FILE = Path(__file__).parents[2] / "docs" / "openapi.json"


async def test_open_routes_need_no_token(gw: Gateway) -> None:
    assert (await gw.admin.get("/healthz")).json() == {"status": "ok"}
    ready = (await gw.admin.get("/readyz")).json()
    assert ready["ready"] and ready["policy_version"] == "test"
    metrics = await gw.admin.get("/metrics")
    assert metrics.status_code == 200 and "gateway_policy_reloads" in metrics.text


async def test_without_a_configured_token_the_api_is_off() -> None:
    settings = Settings(upstream="http://127.0.0.1:9")
    async with in_process(settings, small_policies()) as gw:
        response = await gw.admin.get("/v1/overrides", headers=AUTH)
        assert response.status_code == 403
        assert "GATEWAY_ADMIN_TOKEN" in response.json()["error"]["message"]
        assert (await gw.admin.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}]
)
async def test_a_wrong_or_missing_token_changes_nothing(
    gw: Gateway, headers: dict[str, str]
) -> None:
    body = {"limits": {"requests": "0/minute"}}
    response = await gw.admin.put("/v1/overrides/account/acct-1", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert (await gw.admin.get("/v1/overrides", headers=AUTH)).json()["overrides"] == []
    assert (await gw.admin.get("/v1/audit", headers=AUTH)).json()["entries"] == []


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/overrides/team/x", {"limits": {"tokens": "5M/day"}}, "Unknown scope 'team'"),
        ("/v1/overrides/account/x", {"limits": {"tokens": "5 M/day"}}, "AMOUNT: digits"),
        (
            "/v1/overrides/account/x",
            {"limits": {"tokens": "5M/day"}, "ttl_seconds": -5},
            "ttl_seconds must be positive",
        ),
        (
            "/v1/overrides/account/x",
            {"limits": {"tokens": "5M/day"}, "ttl": 5},
            "Unknown field 'ttl'",
        ),
        ("/v1/overrides/account/x", {"limits": {}}, "limits must be an object"),
        ("/v1/overrides/account/x", "not json", "not JSON"),
        ("/v1/overrides/account/x", [1], "must be a JSON object"),
    ],
)
async def test_bad_input_is_400_and_changes_nothing(
    gw: Gateway, path: str, body: object, expected: str
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = await gw.admin.put(path, content=content, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert expected in error["message"] and error["type"] == "invalid_request"
    assert (await gw.admin.get("/v1/overrides", headers=AUTH)).json()["overrides"] == []
    assert (await gw.admin.get("/v1/audit", headers=AUTH)).json()["entries"] == []


async def test_override_set_list_clear_with_usage_audit_and_effect(gw: Gateway) -> None:
    assert (await gw.client.post("/v1/messages", **message())).status_code == 502  # no upstream
    body = {"limits": {"requests": "0/minute"}, "ttl_seconds": 3600, "reason": "abuse"}
    put = await gw.admin.put("/v1/overrides/account/acct-1", json=body, headers=AUTH)
    assert put.status_code == 200, put.text
    assert put.json()["applies_to"] == ["acct"] and put.json()["replaced"] is None
    assert (await gw.client.post("/v1/messages", **message())).status_code == 429
    assert (await gw.client.post("/v1/messages", **message("acct-2"))).status_code == 502

    usage = (await gw.admin.get("/v1/usage/account/acct-1", headers=AUTH)).json()
    rows = {(r["metric"], r["window"]): r for r in usage["limits"]}
    assert rows["requests", "minute"]["source"] == "override"
    assert rows["requests", "minute"]["limit"] == "0/minute"
    assert rows["tokens", "day"] | {"reset_seconds": 0} == {
        "policy": "acct",
        "mode": "enforce",
        "metric": "tokens",
        "window": "day",
        "limit": "10000/day",
        "amount": 10000,
        "used": 0,  # the 502 refunded its tokens
        "remaining": 10000,
        "reset_seconds": 0,
        "source": "policy",
    }
    assert ("requests", "day") not in rows  # replaced: every limit on requests

    listed = (await gw.admin.get("/v1/overrides", headers=AUTH)).json()["overrides"]
    assert [(o["id"], o["limits"], o["set_by"]) for o in listed] == [
        ("acct-1", {"requests": ["0/minute"]}, "admin")
    ]
    cleared = await gw.admin.delete("/v1/overrides/account/acct-1?reason=done", headers=AUTH)
    assert cleared.status_code == 200 and cleared.json()["removed"]["reason"] == "abuse"
    again = await gw.admin.delete("/v1/overrides/account/acct-1", headers=AUTH)
    assert again.status_code == 404
    entries = (await gw.admin.get("/v1/audit?limit=5", headers=AUTH)).json()["entries"]
    assert [(e["action"], e["actor"], e["reason"]) for e in entries] == [
        ("override.clear", "admin", "done"),
        ("override.set", "admin", "abuse"),
    ]
    assert entries[0]["before"]["limits"] == {"requests": ["0/minute"]}
    assert entries[0]["after"] is None and entries[1]["before"] is None

    metrics = (await gw.admin.get("/metrics")).text
    assert 'gateway_decisions_total{policy="acct",result="refused",scope="account"} 1.0' in metrics
    assert "gateway_active_overrides 0.0" in metrics


async def test_named_tokens_from_a_file_sign_the_audit(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(f"tokens:\n  alice: {hash_token('alice-secret')}\n")
    settings = Settings(upstream="http://127.0.0.1:9", admin_tokens_file=str(tokens))
    async with in_process(settings, small_policies()) as gw:
        alice = {"authorization": "Bearer alice-secret"}
        body = {"limits": {"tokens": "1M/day"}}
        assert (
            await gw.admin.put("/v1/overrides/organization/org-1", json=body, headers=alice)
        ).status_code == 200
        assert (await gw.admin.get("/v1/overrides", headers=AUTH)).status_code == 401
        entries = (await gw.admin.get("/v1/audit", headers=alice)).json()["entries"]
        assert [(e["actor"], e["target"]) for e in entries] == [("alice", "organization/org-1")]


async def test_other_routes_answer_in_the_error_shape(gw: Gateway) -> None:
    reload = await gw.admin.post("/v1/policies/reload", headers=AUTH)
    assert reload.status_code == 409  # the policies were given in code
    assert (await gw.admin.get("/v1/audit?limit=0", headers=AUTH)).status_code == 400
    assert (await gw.admin.get("/v1/usage/galaxy/x", headers=AUTH)).status_code == 400
    missing = await gw.admin.get("/v1/nothing", headers=AUTH)
    assert missing.status_code == 404 and "openapi.json" in missing.json()["error"]["message"]
    policies = (await gw.admin.get("/v1/policies", headers=AUTH)).json()
    assert policies["version"] == "test" and [p["name"] for p in policies["policies"]] == [
        "acct",
        "org",
    ]
    account = (await gw.admin.get("/v1/accounts/acct-9", headers=AUTH)).json()
    assert account["account"] == "acct-9" and account["organization"] is None


async def test_the_last_seen_organization_is_reported(gw: Gateway) -> None:
    await gw.client.post("/v1/messages", **message("acct-5", "org-5"))
    account = (await gw.admin.get("/v1/accounts/acct-5", headers=AUTH)).json()
    assert account["organization"] == "org-5"


def test_openapi_file_matches_and_lists_every_route() -> None:
    doc = document()
    assert json.loads(OPENAPI_FILE.read_text()) == doc, (
        "docs/openapi.json is stale: python -m gateway.admin.openapi > docs/openapi.json"
    )
    settings = Settings(upstream="http://127.0.0.1:9", admin_token=TOKEN)
    admin = create_admin_app(create_app(settings, policies=small_policies()))
    for route in admin.routes:
        assert isinstance(route, Route)
        assert route.path in doc["paths"], route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc["paths"][route.path], (method, route.path)


async def test_openapi_is_served(gw: Gateway) -> None:
    assert (await gw.admin.get("/openapi.json")).json() == document()


async def test_link_and_unlink_by_hand_are_audited(gw: Gateway) -> None:
    for account in ("acct-1", "acct-2"):
        linked = await gw.admin.put(f"/v1/clusters/ring-7/members/{account}", headers=AUTH)
        assert linked.status_code == 200, linked.text
    cluster = (await gw.admin.get("/v1/clusters/ring-7", headers=AUTH)).json()
    assert cluster["members"] == ["acct-1", "acct-2"] and cluster["size"] == 2
    account = (await gw.admin.get("/v1/accounts/acct-2", headers=AUTH)).json()
    assert account["cluster"]["id"] == "ring-7" and account["linked"]
    gone = await gw.admin.delete("/v1/clusters/ring-7/members/acct-2?reason=x", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["cluster"]["size"] == 1
    again = await gw.admin.delete("/v1/clusters/ring-7/members/acct-2", headers=AUTH)
    assert again.status_code == 404
    assert (await gw.admin.get("/v1/clusters/nobody", headers=AUTH)).status_code == 404
    entries = (await gw.admin.get("/v1/audit", headers=AUTH)).json()["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("cluster.unlink", "ring-7/acct-2"),
        ("cluster.link", "ring-7/acct-2"),
        ("cluster.link", "ring-7/acct-1"),
    ]
    assert entries[0]["before"]["size"] == 2 and entries[0]["after"]["size"] == 1


async def test_a_storage_outage_shows_on_readyz_and_in_metrics() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(upstream="http://127.0.0.1:9", storage=dead, admin_token=TOKEN)
    async with in_process(settings, small_policies()) as gw:
        before = (await gw.admin.get("/readyz")).json()
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        await gw.client.post("/v1/messages", json=body, headers={"x-account-id": "a"})
        ready = await gw.admin.get("/readyz")
        metrics = (await gw.admin.get("/metrics")).text
    assert ready.status_code == 200  # open policies still serve: out of service helps no one
    assert ready.json()["storage"] == "down"
    assert before["storage"] in ("up", "down")  # the first upkeep may already have failed
    assert "gateway_storage_up 0.0" in metrics
    assert 'gateway_storage_errors_total{kind="down",operation="reserve"}' in metrics
    # The live overrides are followed off the request path; their failures count as well.
    assert 'gateway_storage_errors_total{kind="down",operation="overrides"}' in metrics


@pytest.mark.parametrize("name", ["gw-eu-1", None])
async def test_an_audit_entry_names_the_replica_that_made_the_change(name: str | None) -> None:
    settings = Settings(upstream="http://127.0.0.1:9", admin_token=TOKEN, replica_name=name)
    async with in_process(settings, small_policies()) as gw:
        body = {"limits": {"requests": "5/minute"}, "reason": "incident"}
        await gw.admin.put("/v1/overrides/account/acct-1", json=body, headers=AUTH)
        (entry,) = (await gw.admin.get("/v1/audit", headers=AUTH)).json()["entries"]
    assert entry["replica"] == (name or f"{socket.gethostname()}/{os.getpid()}")
    assert entry["before"] is None and entry["after"]["limits"] == {"requests": ["5/minute"]}
