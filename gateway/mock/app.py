"""The mock app: both APIs' routes, the /mock/* control routes, and the request log."""

from __future__ import annotations

from dataclasses import asdict

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.apis import error_format_for
from gateway.mock import anthropic, openai
from gateway.mock.base import MockConfig, MockState, error, state_of
from gateway.mock.log import LogRequests


async def _stats(request: Request) -> Response:
    return JSONResponse(asdict(state_of(request).stats))


async def _log(request: Request) -> Response:
    return JSONResponse([entry.as_json() for entry in state_of(request).log.entries()])


async def _ledger(request: Request) -> Response:
    return JSONResponse([entry.as_json() for entry in state_of(request).ledger.entries()])


async def _reset(request: Request) -> Response:
    state_of(request).reset()
    return await _stats(request)


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in the shape of the API the path belongs to."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = exc.headers if isinstance(exc, HTTPException) else None
    where = f"{request.method} {request.url.path}"
    message = f"No route {where} in the mock API."
    if status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path} in the mock API."
    return error(error_format_for(request.url.path), status, message, headers)


def create_mock_app(config: MockConfig) -> Starlette:
    state = MockState(config)
    app = Starlette(
        routes=[
            *anthropic.ROUTES,
            *openai.ROUTES,
            Route("/mock/stats", _stats, methods=["GET"]),
            Route("/mock/log", _log, methods=["GET"]),
            Route("/mock/ledger", _ledger, methods=["GET"]),
            Route("/mock/reset", _reset, methods=["POST"]),
        ],
        middleware=[Middleware(LogRequests, log=state.log)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.mock = state
    return app


async def serve_mock(host: str, port: int, config: MockConfig) -> None:
    """Runs the mock API until the process is told to stop."""
    app = create_mock_app(config)
    # h11 hands the app the request target whole; httptools would drop a "#fragment"
    # before the request log could see it
    settings = uvicorn.Config(app, host=host, port=port, log_level="warning", http="h11")
    await uvicorn.Server(settings).serve()
