"""The admin app: health, readiness and metrics (no token), the admin API (a token), and
the ops dashboard's page at ``/ui/`` (no token to load; its data comes from the API).

It serves on its own listener (loopback by default) and reads the proxy app's state: the
policy holder and metrics from ``create_app``, the engine and ``ops`` from its lifespan.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin import clusters, dashboard, pages, routes
from gateway.admin.auth import AdminAuth, AdminTokens
from gateway.admin.errors import EXCEPTION_HANDLERS
from gateway.admin.openapi import document
from gateway.budget.holder import PolicyHolder
from gateway.metrics import Metrics
from gateway.settings import Settings

# "/ui" only redirects to "/ui/"; the open prefix ends with its slash, so a later route
# named like "/uix" is not left open by accident.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/ui"})
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    gateway = request.app.state.gateway
    ready = hasattr(gateway, "proxy")
    holder: PolicyHolder = gateway.policies
    ops = getattr(gateway, "ops", None)
    engine = getattr(gateway, "engine", None)
    # Ready while the store is down: open policies still admit (each replica its share)
    # and closed ones answer 503 themselves; taking every replica out of service at once
    # would refuse everyone. The state is here for probes and people to read.
    body = {
        "ready": ready,
        "policy_version": holder.current.version,
        "overrides_version": ops.overrides.version if ops is not None else None,
        "storage": None if engine is None else ("down" if engine.outage.down else "up"),
        "storage_backlog": None if engine is None else engine.pending_work,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.gateway.metrics
    return Response(registry.render(), media_type=PROMETHEUS_TEXT)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(document())


def create_admin_app(proxy_app: Starlette) -> Starlette:
    settings: Settings = proxy_app.state.settings
    tokens = AdminTokens(settings.admin_token, settings.admin_tokens_file)
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi),
            *routes.ROUTES,
            *clusters.ROUTES,
            *dashboard.ROUTES,
            *pages.ROUTES,  # the dashboard's files: no token, no data
        ],
        middleware=[
            Middleware(AdminAuth, tokens=tokens, open_paths=OPEN_PATHS, open_prefix="/ui/")
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.gateway = proxy_app.state
    return app
