"""create_app(settings): the whole gateway on one screen.

Two ASGI apps share one Runtime: the proxy app (the model API's port) and the admin app
(health, readiness, metrics, and the admin API, on a separate port bound to loopback).
Clients are opened in the proxy app's lifespan and kept on ``app.state``, never in globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.admin.app import create_admin_app
from gateway.admin.runtime import start_operations
from gateway.admission import Admission, Gate
from gateway.answers import Answer
from gateway.behaviour import Behaviour
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.clusters import ClusterDirectory
from gateway.decision_log import DecisionLog
from gateway.metering import UsageRecord
from gateway.metrics import CountedOutage, Metrics
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet
from gateway.proxy import Proxy, UsageHook
from gateway.settings import Settings
from gateway.shadow import ShadowRecorder
from gateway.storage.connection import (
    close,
    open_cluster_store,
    open_shadow_store,
    open_store,
    warm,
)
from gateway.tarpit import Tarpit
from gateway.upstream import Timeouts, open_upstream

usage_log = logging.getLogger("gateway.usage")

Clock = Callable[[], float]


@dataclass
class Runtime:
    """Everything a running gateway holds; built in the lifespan, closed at shutdown."""

    settings: Settings
    policies: PolicyHolder
    engine: BudgetEngine
    proxy: Proxy
    close: Callable[[], object]


async def log_usage(record: UsageRecord, admission: Admission | None) -> None:
    account = admission.caller.subject.account if admission else "-"
    usage_log.debug(
        "exchange request_id=%s api=%s status=%s outcome=%s account=%s input=%d output=%d "
        "cache_read=%d reported=%s duration_ms=%.1f",
        record.request_id,
        record.api,
        record.status,
        record.outcome.value,
        account,
        record.usage.billable_input_tokens,
        record.usage.output_tokens,
        record.usage.cache_read_input_tokens,
        record.usage_reported,
        record.duration_s * 1000,
    )


def create_app(
    settings: Settings,
    *,
    policies: PolicySet | None = None,
    clock: Clock | None = None,
    hooks: Sequence[UsageHook] = (),
    tarpit: Tarpit | None = None,
) -> Starlette:
    """The proxy app. ``policies``, ``clock``, extra ``hooks`` and a ``tarpit`` with its own
    clock serve tests and replays."""
    policy_set = policies or load_policy_set(settings.policies or "policies/default.yaml")
    holder = PolicyHolder(policy_set)
    metrics = Metrics()
    metrics.policies_running(policy_set.version)
    reload_path = settings.policies if policies is None else None  # a set given in code stays

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = open_store(
            settings.storage,
            socket_timeout=settings.storage_timeout,
            max_connections=settings.storage_connections,
            queue=settings.storage_queue,
            wait=settings.storage_wait,
        )
        await warm(store)
        # Overrides, audit and hot reload; the engine reads the overrides' local snapshot.
        ops = await start_operations(
            settings, holder, metrics, reload_path=reload_path, clock=clock
        )
        engine = BudgetEngine(
            store,
            holder,
            reservation_ttl=settings.reservation_ttl,
            clock=clock,
            overrides=ops.overrides.limits,
            min_replicas=settings.expected_replicas,
            outage=CountedOutage(metrics),
        )
        upkeep = asyncio.create_task(engine.run())
        upstream = open_upstream(
            settings.upstream_client,
            settings.upstream,
            Timeouts(connect=settings.upstream_connect_timeout, read=settings.upstream_timeout),
        )
        # Clusters and the shadow report share the budget store's client and hash tag.
        clusters = ClusterDirectory(
            open_cluster_store(store),
            holder,
            clock=clock,
            outage=engine.outage,
            on_merge=lambda _: metrics.cluster_merges.inc(),
            retention=settings.link_retention_days * 86400,
            on_store_reset=metrics.store_resets.inc,
        )
        await clusters.ensure_links()
        maintenance = asyncio.create_task(clusters.run())
        shadow = ShadowRecorder(open_shadow_store(store), clock=clock)
        shadow_flusher = asyncio.create_task(shadow.run())
        behaviour = Behaviour(clock or time.time)
        held = tarpit if tarpit is not None else Tarpit(settings.max_held)
        gate = Gate(
            holder, engine, clusters=clusters, shadow=shadow, behaviour=behaviour, tarpit=held
        )
        decision_log = DecisionLog(settings.decision_log) if settings.decision_log else None
        all_hooks: list[UsageHook] = [gate.settle, metrics.record_exchange, log_usage, *hooks]
        all_hooks += [ops.seen.record, ops.spenders.record]  # the admin API's, in memory
        if decision_log is not None:
            all_hooks.append(decision_log)

        def answered(answer: Answer) -> None:
            metrics.record_answer(answer)
            ops.refusals.record(answer)  # the dashboard's last hour, in memory

        app.state.proxy = Proxy(
            upstream, gate, all_hooks, settings.max_body_bytes, on_answer=answered
        )
        app.state.engine = engine
        app.state.policies = holder
        app.state.ops = ops
        app.state.clusters = clusters
        app.state.shadow = shadow
        try:
            yield
        finally:
            for task in (shadow_flusher, upkeep, maintenance):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ops.aclose()
            await upstream.aclose()
            await close(store)
            if decision_log is not None:
                decision_log.close()

    app = Starlette(middleware=[Middleware(_Forward)], lifespan=lifespan)
    app.state.settings = settings
    app.state.policies = holder
    app.state.metrics = metrics
    return app


class _Forward:
    """Every HTTP request goes to the proxy as it came: no router reads its path first (the
    proxy's own gate refuses what it cannot forward, in the API's shape); the lifespan goes
    on to Starlette."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await scope["app"].state.proxy(scope, receive, send)
        else:
            await self.app(scope, receive, send)


__all__ = ["create_admin_app", "create_app"]
