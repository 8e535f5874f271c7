"""The admin API's OpenAPI description, served at /openapi.json and kept in docs/openapi.json.

Regenerate the file after changing a route: ``python -m gateway.admin.openapi > docs/openapi.json``
(a test fails while the two differ, or while a route is missing here).
"""

from __future__ import annotations

import json
from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANY = {"type": "object"}


def _op(
    summary: str,
    ok: str,
    *errors: int,
    body: bool = False,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": ok, "content": {"application/json": {"schema": _ANY}}}
    }
    for status in errors:
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if public:
        op["security"] = []  # no token needed
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Override"}}},
        }
    return op


_ERROR_TEXT = {
    400: "Bad input (unknown scope, bad limit, bad TTL, not JSON); nothing changed",
    401: "Missing or wrong token; nothing changed",
    403: "No admin token is configured; the sentence says how to enable one",
    404: "Not found",
    409: "Nothing to reload: the policies were not read from a path",
    422: "The policy files fail the check; the running version is kept",
    501: "No cluster directory in this gateway",
    503: "The store did not answer, or the gateway is still starting",
}
_AUTH = (401, 403, 503)


def _param(name: str, text: str, where: str = "path", **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": text,
        "schema": schema or {"type": "string"},
    }


def _page(summary: str, *media_types: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],
        "responses": {
            "200": {"description": "The file", "content": {t: {} for t in media_types}},
            "404": {"description": _ERROR_TEXT[404], "content": {"application/json": {}}},
        },
    }


_SCOPE = _param(
    "scope",
    "account, organization or cluster",
    enum=["account", "organization", "cluster"],
    type="string",
)
_ID = _param("id", "the scope id")
_REASON = _param("reason", "why, for the audit", "query")


def document() -> dict[str, Any]:
    scoped = {"parameters": [_SCOPE, _ID]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gateway admin API", "version": "1"},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                            },
                        }
                    },
                },
                "Override": {
                    "type": "object",
                    "required": ["limits"],
                    "additionalProperties": False,
                    "properties": {
                        "limits": {
                            "type": "object",
                            "description": "metric → AMOUNT/UNIT (or a list of them); "
                            "concurrent → a count",
                            "examples": [{"tokens": "5M/day"}],
                        },
                        "ttl_seconds": {"type": ["number", "null"], "exclusiveMinimum": 0},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
        "paths": {
            "/healthz": {"get": _op("Liveness", "Alive", public=True)},
            "/readyz": {
                "get": _op("Readiness and the running policy version", "Ready", 503, public=True)
            },
            "/metrics": {"get": _op("Prometheus metrics (text)", "Metrics", public=True)},
            "/openapi.json": {"get": _op("This document", "OpenAPI 3.1", public=True)},
            "/v1/policies": {
                "get": _op("The running policy set", "Version, files, policies", *_AUTH)
            },
            "/v1/policies/reload": {
                "post": _op("Reload the policy files now", "The new version", 409, 422, *_AUTH)
            },
            "/v1/usage/{scope}/{id}": {
                "get": _op(
                    "Every limit of a scope id: limit, used, remaining, reset, policy",
                    "Usage",
                    400,
                    *_AUTH,
                    parameters=[_SCOPE, _ID],
                )
            },
            "/v1/overrides": {"get": _op("Active overrides", "Overrides", *_AUTH)},
            "/v1/overrides/{scope}/{id}": {
                **scoped,
                "put": _op("Set an override", "The override", 400, *_AUTH, body=True),
                "delete": _op(
                    "Clear an override", "Removed", 400, 404, *_AUTH, parameters=[_REASON]
                ),
            },
            "/v1/accounts/{id}": {
                "get": _op(
                    "An account's organization and cluster", "Account", *_AUTH, parameters=[_ID]
                )
            },
            "/v1/clusters/{id}": {
                "get": _op(
                    "A cluster's members and spend", "Cluster", 404, 501, *_AUTH, parameters=[_ID]
                )
            },
            "/v1/clusters/{id}/members/{account}": {
                "parameters": [_ID, _param("account", "the account id")],
                "put": _op("Link an account", "Linked", 501, *_AUTH, parameters=[_REASON]),
                "delete": _op(
                    "Unlink an account", "Unlinked", 404, 501, *_AUTH, parameters=[_REASON]
                ),
            },
            "/v1/spenders": {
                "get": _op(
                    "Today's top accounts, organizations and linked clusters by tokens, as this "
                    "replica tallied them, with their shared day limits (used, remaining)",
                    "Spenders",
                    400,
                    *_AUTH,
                    parameters=[
                        _param("limit", "1 to 100 (10) per scope", "query", type="integer")
                    ],
                )
            },
            "/v1/refusals": {
                "get": _op(
                    "This replica's refusals in each of the last 60 minutes, by reason and policy",
                    "Series",
                    *_AUTH,
                )
            },
            "/v1/shadow": {
                "get": _op(
                    "Shadow policies' would-be refusals: per policy, and the ids most refused",
                    "Report",
                    400,
                    *_AUTH,
                    parameters=[_param("limit", "1 to 1000 (10) ids", "query", type="integer")],
                )
            },
            "/ui/": {"get": _page("The ops dashboard; the page asks for the token", "text/html")},
            "/ui/{name}": {
                "parameters": [_param("name", "index.html, app.js, chart.js or style.css")],
                "get": _page("The dashboard's files", "text/html", "text/javascript", "text/css"),
            },
            "/v1/audit": {
                "get": _op(
                    "The latest admin actions, newest first",
                    "Entries",
                    400,
                    *_AUTH,
                    parameters=[_param("limit", "1 to 1000 (50)", "query", type="integer")],
                )
            },
        },
    }


if __name__ == "__main__":
    print(json.dumps(document(), indent=2))
