"""An in-process gateway (memory://) with its admin app, for the admin API's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from gateway.app import create_admin_app, create_app
from gateway.policy.model import Metric, PolicySet, Scope, Unit
from gateway.settings import Settings
from tests.budget.helpers import limit, policy, policy_set

TOKEN = "test-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def small_policies() -> PolicySet:
    return policy_set(
        policy(
            "acct", limit(Metric.REQUESTS, 100, Unit.DAY), limit(Metric.TOKENS, 10_000, Unit.DAY)
        ),
        policy("org", limit(Metric.TOKENS, 50_000, Unit.DAY), scope=Scope.ORGANIZATION),
    )


@dataclass
class Gateway:
    proxy: Starlette
    admin: httpx.AsyncClient  # the admin app, in process
    client: httpx.AsyncClient  # the proxy app, in process


@asynccontextmanager
async def in_process(
    settings: Settings, policies: PolicySet | None = None
) -> AsyncIterator[Gateway]:
    app = create_app(settings, policies=policies)
    async with app.router.lifespan_context(app):
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_admin_app(app)), base_url="http://admin"
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
            base_url="http://gw",
        )
        async with admin, client:
            yield Gateway(app, admin, client)


@pytest.fixture
def make_gateway() -> Callable[..., Any]:
    return in_process


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    settings = Settings(upstream="http://127.0.0.1:9", admin_token=TOKEN)
    async with in_process(settings, small_policies()) as gateway:
        yield gateway


def message(account: str = "acct-1", organization: str = "org-1") -> dict[str, Any]:
    """An Anthropic Messages request as the proxy sees it (its headers and JSON body)."""
    return {
        "headers": {"x-account-id": account, "x-organization-id": organization},
        "json": {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
    }
