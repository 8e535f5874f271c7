"""Admin routes for policies, usage, overrides and the audit trail. JSON in, JSON out."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admin.errors import AdminError
from gateway.admin.runtime import Operations
from gateway.budget.decision import LimitStatus
from gateway.budget.engine import BudgetEngine
from gateway.overrides import Override, parse_limits
from gateway.policy.model import PolicySet, Scope

SCOPES = ", ".join(s.value for s in Scope)
_OVERRIDE_KEYS = {"limits", "ttl_seconds", "reason"}


def ops_of(request: Request) -> Operations:
    ops: Operations | None = getattr(request.app.state.gateway, "ops", None)
    if ops is None:
        raise AdminError(503, "The gateway is still starting; try again in a moment.")
    return ops


def engine_of(request: Request) -> BudgetEngine:
    ops_of(request)
    engine: BudgetEngine = request.app.state.gateway.engine
    return engine


def actor_of(request: Request) -> str:
    return str(request.state.actor)


def scope_of(request: Request) -> Scope:
    raw = request.path_params["scope"]
    try:
        return Scope(raw)
    except ValueError:
        raise AdminError(400, f"Unknown scope {raw!r}; scopes are {SCOPES}.") from None


async def json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise AdminError(400, "The request body is not JSON; send a JSON object.") from None
    if not isinstance(body, dict):
        raise AdminError(400, "The request body must be a JSON object.")
    return body


def policies_of_scope(policies: PolicySet, scope: Scope) -> list[str]:
    return [p.name for p in policies.policies if p.scope is scope]


async def get_policies(request: Request) -> JSONResponse:
    ops = ops_of(request)
    current = ops.holder.current
    body: dict[str, Any] = {
        "version": current.version,
        "sources": list(current.sources),
        "loaded_at": ops.started_at,
        "policies": [
            {"name": p.name, "scope": p.scope.value, "mode": p.mode.value} for p in current.policies
        ],
        "reloading": ops.reloader is not None,
    }
    if ops.reloader is not None:
        last = ops.reloader.last_result
        body["path"] = str(ops.reloader.path)
        body["loaded_at"] = ops.reloader.last_good.loaded_at
        body["last_reload"] = {
            "outcome": last.outcome,
            "checked_at": last.checked_at,
            "problems": last.problems,
        }
    return JSONResponse(body)


async def post_reload(request: Request) -> JSONResponse:
    ops = ops_of(request)
    if ops.reloader is None:
        raise AdminError(
            409, "This gateway was given its policies in code, not a path; nothing to reload."
        )
    before, result = await ops.reload(actor_of(request))
    if not result.ok:
        raise AdminError(
            422,
            f"The policy set fails the check; version {result.version} keeps running.",
            problems=result.problems,
            version=result.version,
        )
    return JSONResponse(
        {
            "outcome": result.outcome,
            "version": result.version,
            "previous_version": before,
            "loaded_at": result.loaded_at,
            "sources": list(result.sources),
        }
    )


def status_row(
    status: LimitStatus, policies: PolicySet, scope_id: str, live: Override | None
) -> dict[str, Any]:
    limit = status.limit
    policy = next((p for p in policies.policies if p.name == status.policy), None)
    source = "policy"
    if live is not None and limit in live.limits:
        source = "override"
    elif policy is not None and limit in policy.overrides.get(scope_id, ()):
        source = "policy file override"
    return {
        "policy": status.policy,
        "mode": policy.mode.value if policy is not None else None,
        "metric": limit.metric.value,
        "window": limit.window_name,
        "limit": limit.text,
        "amount": limit.amount,
        "used": max(0, limit.amount - status.remaining),
        "remaining": status.remaining,
        "reset_seconds": round(status.reset_seconds, 3),
        "source": source,
    }


async def get_usage(request: Request) -> JSONResponse:
    scope, scope_id = scope_of(request), request.path_params["id"]
    ops, engine = ops_of(request), engine_of(request)
    attributes = dict(request.query_params) or None
    policies = ops.holder.current
    statuses = await engine.usage(scope, scope_id, attributes)
    live = ops.overrides.get(scope, scope_id)
    rows = [status_row(s, policies, scope_id, live) for s in statuses]
    return JSONResponse(
        {
            "scope": scope.value,
            "id": scope_id,
            "policy_version": policies.version,
            "override": live.to_json() if live is not None else None,
            "limits": rows,
        }
    )


def _ttl(body: dict[str, Any]) -> float | None:
    ttl = body.get("ttl_seconds")
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise AdminError(400, f"ttl_seconds must be a number of seconds, not {ttl!r}.")
    if ttl <= 0:
        raise AdminError(
            400,
            f"ttl_seconds must be positive, not {ttl}; leave it out for an override that "
            "lasts until it is cleared.",
        )
    return float(ttl)


async def put_override(request: Request) -> JSONResponse:
    scope, scope_id = scope_of(request), request.path_params["id"]
    body = await json_object(request)
    if unknown := sorted(set(body) - _OVERRIDE_KEYS):
        raise AdminError(
            400, f"Unknown field {unknown[0]!r}; an override takes limits, ttl_seconds, reason."
        )
    try:
        limits = parse_limits(body.get("limits"))
    except ValueError as exc:
        raise AdminError(400, f"{exc}.") from None
    ttl, reason = _ttl(body), body.get("reason", "")
    if not isinstance(reason, str):
        raise AdminError(400, "reason must be a string.")
    ops, actor = ops_of(request), actor_of(request)
    before, after = await ops.overrides.set(
        scope, scope_id, limits, ttl_seconds=ttl, reason=reason, set_by=actor
    )
    before_json = before.to_json() if before is not None else None
    await ops.audit.record(
        actor,
        "override.set",
        f"{scope.value}/{scope_id}",
        before=before_json,
        after=after.to_json(),
        reason=reason,
    )
    applies_to = policies_of_scope(ops.holder.current, scope)
    return JSONResponse(
        {"override": after.to_json(), "replaced": before_json, "applies_to": applies_to}
    )


async def list_overrides(request: Request) -> JSONResponse:
    ops = ops_of(request)
    now = ops.clock()
    overrides = []
    for override in ops.overrides.active():
        seconds_left = None if override.expires_at is None else override.expires_at - now
        overrides.append({**override.to_json(), "seconds_left": seconds_left})
    return JSONResponse({"version": ops.overrides.version, "overrides": overrides})


async def delete_override(request: Request) -> JSONResponse:
    scope, scope_id = scope_of(request), request.path_params["id"]
    ops, actor = ops_of(request), actor_of(request)
    if ops.overrides.get(scope, scope_id) is None:
        await ops.overrides.refresh()  # set a moment ago elsewhere? ask storage, not the snapshot
        if ops.overrides.get(scope, scope_id) is None:
            raise AdminError(404, f"No override is set for {scope.value} {scope_id!r}.")
    removed = await ops.overrides.clear(scope, scope_id)
    before = removed.to_json() if removed is not None else None
    reason = request.query_params.get("reason", "")
    target = f"{scope.value}/{scope_id}"
    await ops.audit.record(
        actor, "override.clear", target, before=before, after=None, reason=reason
    )
    return JSONResponse({"removed": before})


async def get_audit(request: Request) -> JSONResponse:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise AdminError(400, f"limit must be a whole number from 1 to 1000, not {raw!r}.")
    entries = await ops_of(request).audit.latest(int(raw))
    return JSONResponse({"entries": [e.to_json() for e in entries]})


ROUTES = [
    Route("/v1/policies", get_policies, methods=["GET"]),
    Route("/v1/policies/reload", post_reload, methods=["POST"]),
    Route("/v1/usage/{scope}/{id}", get_usage, methods=["GET"]),
    Route("/v1/overrides", list_overrides, methods=["GET"]),
    Route("/v1/overrides/{scope}/{id}", put_override, methods=["PUT"]),
    Route("/v1/overrides/{scope}/{id}", delete_override, methods=["DELETE"]),
    Route("/v1/audit", get_audit, methods=["GET"]),
]
