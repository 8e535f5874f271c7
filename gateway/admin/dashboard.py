"""Admin routes behind the ops dashboard: top spenders, refusals per minute, shadow report.

``GET /v1/spenders`` ranks the ids of this replica's in-memory tally (``spenders.py``: no
storage call on the request path) and, only now that someone asks, reads the shared day
counters of those few ids from storage, so what is "used" and "remaining" counts every
replica. ``GET /v1/refusals`` is this replica's last hour (``refusals.py``).
``GET /v1/shadow`` reads the shadow report every replica adds to (``gateway.shadow``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admin.errors import AdminError
from gateway.admin.routes import engine_of, ops_of, status_row
from gateway.admin.spenders import Spender
from gateway.budget.engine import BudgetEngine
from gateway.errors import StorageError
from gateway.overrides import LiveOverrides
from gateway.policy.model import Mode, PolicySet, Scope, Unit
from gateway.shadow import ShadowRecorder, shadow_report


def _count(request: Request, name: str, default: int, most: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise AdminError(400, f"{name} must be a whole number from 1 to {most}, not {raw!r}.")
    return int(raw)


async def _with_limits(
    engine: BudgetEngine,
    policies: PolicySet,
    overrides: LiveOverrides,
    scope: Scope,
    spender: Spender,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": spender.scope_id,
        "tokens": spender.tokens,
        "tokens_at_least": spender.tokens - spender.error,
    }
    try:
        statuses = await engine.usage(scope, spender.scope_id)
    except StorageError:
        row["limits"] = None  # the tally still ranks; the shared counters are unknown now
        return row
    live = overrides.get(scope, spender.scope_id)
    day = [s for s in statuses if s.limit.unit is Unit.DAY]
    row["limits"] = [status_row(s, policies, spender.scope_id, live) for s in day]
    return row


async def get_spenders(request: Request) -> JSONResponse:
    """Today's top ids per scope by this replica's tally, with the shared day limits."""
    n = _count(request, "limit", 10, 100)
    ops, engine = ops_of(request), engine_of(request)
    policies = ops.holder.current
    body: dict[str, Any] = {"day_started_at": ops.spenders.day_started_at, "scopes": {}}
    for scope in Scope:
        top = ops.spenders.top(scope, n)
        rows = await asyncio.gather(
            *(_with_limits(engine, policies, ops.overrides, scope, s) for s in top)
        )
        body["scopes"][scope.value] = list(rows)
    return JSONResponse(body)


async def get_refusals(request: Request) -> JSONResponse:
    """This replica's refusals in each of the last 60 minutes, by reason and policy."""
    first, series = ops_of(request).refusals.series()
    return JSONResponse(
        {
            "first_minute": first,
            "minutes": 60,
            "series": [
                {
                    "reason": s.reason,
                    "policy": s.policy,
                    "total": s.total,
                    "per_minute": list(s.per_minute),
                }
                for s in series
            ],
        }
    )


async def get_shadow(request: Request) -> JSONResponse:
    """Shadow policies' would-be refusals: per policy, and the ids they would refuse most."""
    n = _count(request, "limit", 10, 1000)
    ops = ops_of(request)
    recorder: ShadowRecorder | None = getattr(request.app.state.gateway, "shadow", None)
    if recorder is None:
        raise AdminError(503, "The gateway is still starting; try again in a moment.")
    rows, dropped = await shadow_report(recorder.store)
    running = ops.holder.current.policies
    policies: dict[str, dict[str, Any]] = {
        p.name: {"policy": p.name, "scope": p.scope.value, "refusals": 0, "ids": 0}
        for p in running
        if p.mode is Mode.SHADOW
    }
    for row in rows:
        entry = policies.setdefault(
            row.policy, {"policy": row.policy, "scope": row.scope, "refusals": 0, "ids": 0}
        )
        entry["refusals"] += row.count
        entry["ids"] += 1
        entry["last_seen"] = max(entry.get("last_seen", 0.0), row.last_seen)
    top = [
        {
            "policy": row.policy,
            "scope": row.scope,
            "id": row.scope_id,
            "refusals": row.count,
            "tokens": row.tokens,
            "last_seen": row.last_seen,
        }
        for row in rows[:n]
    ]
    return JSONResponse(
        {
            "policies": sorted(policies.values(), key=lambda p: (-p["refusals"], p["policy"])),
            "top": top,
            "dropped": dropped,
        }
    )


ROUTES = [
    Route("/v1/spenders", get_spenders, methods=["GET"]),
    Route("/v1/refusals", get_refusals, methods=["GET"]),
    Route("/v1/shadow", get_shadow, methods=["GET"]),
]
