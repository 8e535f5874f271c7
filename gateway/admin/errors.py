"""Admin API errors: one shape, ``{"error": {"message": ..., "type": ...}}``, one sentence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import StorageError

_TYPES = {
    400: "invalid_request",
    401: "authentication_error",
    403: "admin_disabled",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "policy_error",
    501: "not_implemented",
    503: "storage_error",
}


class AdminError(Exception):
    """Raised by a route: answered as ``status`` with ``message``; ``extra`` joins the error."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    error = {"message": message, "type": _TYPES.get(status, "error"), **extra}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def on_admin_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, AdminError):
        raise exc
    return error_response(exc.status, exc.message, **exc.extra)


async def on_storage_error(request: Request, exc: Exception) -> Response:
    return error_response(503, f"The store did not answer, so nothing was changed: {exc}")


async def on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    if exc.status_code == 404:
        message = f"No admin route {request.url.path}; GET /openapi.json lists them."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    AdminError: on_admin_error,
    StorageError: on_storage_error,
    HTTPException: on_http_error,
}
