"""The ops dashboard's files, served at ``/ui/`` on the admin listener with no token.

The page holds no data: it asks for the admin token, keeps it in the tab's
``sessionStorage`` and reads the token-protected admin API with it. The files ship inside
the package (``gateway/admin/ui/``, package data), so a gateway without internet serves
all of it. Every answer forbids what the page does not need: scripts, styles and requests
from elsewhere, inline scripts, framing, and sending the page's address on.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin.errors import AdminError

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _read(name: str) -> bytes:
    return (resources.files("gateway.admin") / "ui" / name).read_bytes()


_CONTENT = {name: _read(name) for name in FILES}


def _file(name: str) -> Response:
    return Response(_CONTENT[name], media_type=FILES[name], headers=HEADERS)


async def index(request: Request) -> Response:
    return _file("index.html")


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in FILES:  # a fixed list: no path from the request reaches the disk
        raise AdminError(404, f"No dashboard file {name!r}.")
    return _file(name)


ROUTES = [
    Route("/ui/", index, methods=["GET"]),
    Route("/ui/{name}", asset, methods=["GET"]),
]
