"""Admin routes for accounts and clusters: who is linked to whom, and what a cluster spent.

They use the gateway's ``ClusterDirectory`` (``app.state.clusters``); an app built without
one answers 501. An account on its own is a cluster of one whose id is the account. Manual
links and unlinks are audited.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.admin.errors import AdminError
from gateway.admin.routes import actor_of, engine_of, ops_of
from gateway.budget.cluster_store import ClusterInfo
from gateway.clusters import ClusterDirectory
from gateway.policy.model import Scope

NO_DIRECTORY = (
    "This gateway has no cluster directory, so accounts cannot be linked here; "
    "clusters come from the policy files' clusters section."
)


def directory_of(request: Request) -> ClusterDirectory | None:
    return getattr(request.app.state.gateway, "clusters", None)


def _needs_directory(request: Request) -> ClusterDirectory:
    directory = directory_of(request)
    if directory is None:
        raise AdminError(501, NO_DIRECTORY)
    return directory


NO_CLUSTER_POLICY = (
    "No cluster policy is running, so this link changes no budget until a policy with "
    "scope: cluster applies."
)


def _cluster_json(info: ClusterInfo) -> dict[str, Any]:
    return {"id": info.id, "size": info.size, "members": list(info.members)}


def _linked(info: ClusterInfo, account: str) -> bool:
    """In a cluster of several, or in a named one, even as its last member (an account on
    its own is a cluster of one named after it)."""
    return info.size > 1 or info.id != account


async def get_account(request: Request) -> JSONResponse:
    account = request.path_params["id"]
    ops = ops_of(request)
    organization = ops.seen.get(account)
    directory = directory_of(request)
    info = await directory.cluster_of(account) if directory is not None else None
    return JSONResponse(
        {
            "account": account,
            # Learned from this replica's traffic; null means not seen here since it started.
            "organization": organization,
            "cluster": _cluster_json(info) if info is not None else None,
            "linked": info is not None and _linked(info, account),
            "clusters_available": directory is not None,
        }
    )


async def get_cluster(request: Request) -> JSONResponse:
    cluster_id = request.path_params["id"]
    directory = _needs_directory(request)
    members = list(await directory.members(cluster_id))
    if not members:
        raise AdminError(404, f"No cluster {cluster_id!r} is known.")
    statuses = await engine_of(request).usage(Scope.CLUSTER, cluster_id)
    spend = [
        {
            "policy": s.policy,
            "metric": s.limit.metric.value,
            "window": s.limit.window_name,
            "limit": s.limit.text,
            "used": max(0, s.limit.amount - s.remaining),
            "remaining": s.remaining,
            "reset_seconds": round(s.reset_seconds, 3),
        }
        for s in statuses
    ]
    return JSONResponse(
        {"id": cluster_id, "size": len(members), "members": members, "spend": spend}
    )


async def put_member(request: Request) -> JSONResponse:
    cluster_id, account = request.path_params["id"], request.path_params["account"]
    directory = _needs_directory(request)
    before = _cluster_json(await directory.cluster_of(account))
    after = _cluster_json(await directory.link(cluster_id, account))
    reason = request.query_params.get("reason", "")
    ops = ops_of(request)
    await ops.audit.record(
        actor_of(request),
        "cluster.link",
        f"{cluster_id}/{account}",
        before=before,
        after=after,
        reason=reason,
    )
    policies = ops.holder.current.policies
    in_use = any(policy.scope is Scope.CLUSTER for policy in policies)
    warnings = [] if in_use else [NO_CLUSTER_POLICY]
    return JSONResponse(
        {"account": account, "before": before, "cluster": after, "warnings": warnings}
    )


async def delete_member(request: Request) -> JSONResponse:
    cluster_id, account = request.path_params["id"], request.path_params["account"]
    directory = _needs_directory(request)
    info = await directory.cluster_of(account)
    if info.id != cluster_id or not _linked(info, account):
        raise AdminError(404, f"Account {account!r} is not in cluster {cluster_id!r}.")
    before = _cluster_json(info)
    await directory.unlink(account)
    after = _cluster_json(await directory.cluster_of(account))
    reason = request.query_params.get("reason", "")
    await ops_of(request).audit.record(
        actor_of(request),
        "cluster.unlink",
        f"{cluster_id}/{account}",
        before=before,
        after=after,
        reason=reason,
    )
    return JSONResponse({"account": account, "before": before, "cluster": after})


ROUTES = [
    Route("/v1/accounts/{id}", get_account, methods=["GET"]),
    Route("/v1/clusters/{id}", get_cluster, methods=["GET"]),
    Route("/v1/clusters/{id}/members/{account}", put_member, methods=["PUT"]),
    Route("/v1/clusters/{id}/members/{account}", delete_member, methods=["DELETE"]),
]
