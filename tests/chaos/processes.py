"""The processes a chaos test runs, each a real subprocess in its own session:

- ``PrivateRedis``: a ``redis-server`` on a free port with no persistence, which a test can
  ``stall`` (SIGSTOP) and ``resume`` (SIGCONT), ``kill`` (SIGKILL) and ``start`` again on
  the same port, empty;
- ``MockUpstream``: ``gateway mock-upstream`` (its ``/mock/ledger`` is the record of what was
  really served);
- ``Replica``: ``gateway serve`` on a free port pair with its own admin token.

Every output goes to a log file in the test's directory; ``Service.tail`` shows the end of it
in a failure message. Starting waits, up to a deadline, until the process answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.rediscluster import INSTALL, pings, wait_until
from tests.servers import free_port

ADMIN_TOKEN = "chaos-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
START_S = 30.0  # a replica imports and connects in about a second; a busy CI box is slower


def _answers_http(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class Service:
    """One subprocess, its own session (a signal reaches it alone), its output in ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.log.parent,  # not the checkout: ``-m gateway`` imports from the cwd
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process dies as well
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30, *, quiet: bool = False) -> str:
        """The log's last ``lines``; ``quiet`` keeps only warnings, errors and tracebacks."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        kept = text.splitlines()
        if quiet:
            kept = [line for line in kept if not (" INFO " in line or " DEBUG " in line)]
        return "\n".join(kept[-lines:])

    def wait_answering(self, check: Any, what: str) -> None:
        try:
            wait_until(lambda: self._exited() or check(), START_S, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None
        if self._exited():
            raise RuntimeError(f"{self.name} exited while starting:\n{self.tail()}")

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None


class PrivateRedis(Service):
    """A ``redis-server`` only this test uses. No persistence: a restart comes back empty."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(INSTALL)
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir)]
        super().__init__(f"redis:{self.port}", argv, workdir / "redis.log", {})

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        return pings(self.port)

    def start(self) -> None:
        self.spawn()
        self.wait_answering(self.answers, f"redis-server on port {self.port} answering PING")

    def stall(self) -> None:
        self.send(signal.SIGSTOP)

    def resume(self) -> None:
        self.send(signal.SIGCONT)


class MockUpstream(Service):
    """``gateway mock-upstream``: every answer ``output_tokens`` long, a delta every
    ``token_delay`` seconds when streamed."""

    def __init__(self, workdir: Path, *, output_tokens: int, token_delay: float) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "gateway", "mock-upstream", "--port", str(self.port)]
        argv += ["--output-tokens", str(output_tokens), "--token-delay", str(token_delay)]
        super().__init__(f"mock:{self.port}", argv, workdir / "mock.log", {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn()
        self.wait_answering(
            lambda: _answers_http(f"{self.url}/mock/stats"), f"mock upstream on {self.port}"
        )


class Replica(Service):
    """``gateway serve`` with the admin token set; ``index`` names it in messages."""

    def __init__(
        self,
        workdir: Path,
        index: int,
        *,
        storage: str,
        upstream: str,
        policies: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.index = index
        self.port = free_port()
        self.admin_port = free_port()
        argv = [sys.executable, "-m", "gateway", "serve", "--upstream", upstream]
        argv += ["--policies", str(policies), "--storage", storage]
        argv += ["--port", str(self.port), "--admin-port", str(self.admin_port)]
        environment = {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        name = f"replica-{index}:{self.port}"
        super().__init__(name, argv, workdir / f"replica-{index}.log", environment)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def ready(self) -> bool:
        return _answers_http(f"{self.admin_url}/readyz") and _answers_http(
            f"{self.admin_url}/healthz"
        )

    def start(self) -> None:
        self.spawn()
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        self.wait_answering(self.ready, f"{self.name} answering /readyz")
