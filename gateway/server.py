"""Running the gateway: the proxy and admin listeners in one process, or N forked workers.

With ``--workers N`` the parent binds both sockets once and forks N workers that accept on
them (the kernel spreads connections); the parent only forwards signals and waits. The
workers' metrics go to a directory of the parent's own, made for this serve and removed
after it, so that a scrape (taken by any worker) counts every worker's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Literal

import uvicorn
import uvloop

from gateway.app import create_admin_app, create_app
from gateway.metrics import private_to_this_process, share_between_workers, worker_gone
from gateway.settings import Settings

Lifespan = Literal["auto", "on", "off"]
log = logging.getLogger("gateway.server")


class _ListenerServer(uvicorn.Server):
    """A listener that leaves signals to its owner: the admin listener follows the proxy
    server's lifetime, and in-process servers (demo, tests) follow their context."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, host: str, port: int, lifespan: Lifespan = "on") -> uvicorn.Config:
    """How every gateway listener runs. The gateway decides itself which peers to trust
    (uvicorn's proxy_headers would rewrite the client address from x-forwarded-for), and
    passes the upstream's own server and date headers through instead of adding uvicorn's."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # h11, never httptools even where installed: httptools drops a target's #fragment
        # and rewrites an absolute-form target, so a target that reads two ways could no
        # longer be refused (tests/test_gate.py); the proxy must see the target as sent.
        http="h11",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(
    app: Any, host: str = "127.0.0.1", lifespan: Lifespan = "on"
) -> AsyncIterator[str]:
    """Serve ``app`` on a free port in this event loop; yields its base URL (demo, tests)."""
    port = free_port(host)
    server = _ListenerServer(uvicorn_config(app, host, port, lifespan))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the server on {host}:{port} exited before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


async def serve(
    settings: Settings,
    proxy_sockets: list[socket.socket] | None = None,
    admin_sockets: list[socket.socket] | None = None,
) -> None:
    app = create_app(settings)
    loop = type(asyncio.get_running_loop())
    log.info("event loop %s.%s, HTTP parser h11", loop.__module__, loop.__name__)
    proxy = uvicorn.Server(uvicorn_config(app, settings.host, settings.port))
    admin = _ListenerServer(
        uvicorn_config(create_admin_app(app), settings.admin_host, settings.admin_port, "off")
    )
    admin_task = asyncio.create_task(admin.serve(sockets=admin_sockets))
    try:
        await proxy.serve(sockets=proxy_sockets)
    finally:
        admin.should_exit = True
        await admin_task


def run_loop(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """``main`` on the event loop ``--loop`` names. uvloop by default: the same asyncio
    API on libuv, measured faster for the proxy (docs/performance.md). The HTTP parser
    stays h11 whatever is installed (``uvicorn_config``)."""
    if settings.loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)


def run(settings: Settings) -> int:
    if settings.workers == 1:
        private_to_this_process()  # never an inherited PROMETHEUS_MULTIPROC_DIR either
        run_loop(settings, serve(settings))
        return 0
    proxy_sock = bind(settings.host, settings.port)
    admin_sock = bind(settings.admin_host, settings.admin_port)
    # Fresh and private: a directory left by an earlier serve (or shared with another)
    # would add its counts to this one's. Never an inherited PROMETHEUS_MULTIPROC_DIR.
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    try:
        share_between_workers(metrics_dir)
        return _fork_workers(settings, proxy_sock, admin_sock, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _fork_workers(
    settings: Settings, proxy_sock: socket.socket, admin_sock: socket.socket, metrics_dir: str
) -> int:
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                run_loop(settings, serve(settings, [proxy_sock], [admin_sock]))
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    left = set(children)
    while left:
        # Whichever worker ends first: its live gauges must stop counting at once.
        pid, code = os.wait()
        if pid not in left:
            continue
        left.discard(pid)
        worker_gone(pid, metrics_dir)
        status = status or os.waitstatus_to_exitcode(code)
    sys.stdout.flush()
    return 1 if status else 0
