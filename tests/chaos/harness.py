"""One chaos test's world: the processes it started, its policy files, and what it can ask
of them (the ledger, the mock's counters, each replica's admin API).

``Harness.close`` stops every process it started, whatever state the test left them in
(a stalled Redis is continued first, so that it can exit); the ``chaos`` fixture calls it
even when the test fails. Every wait polls up to a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.ledger import Ledger
from tests.chaos.load import Outcome, Shot, burst, client, send
from tests.chaos.processes import (
    AUTH,
    MockUpstream,
    PrivateRedis,
    Replica,
    Service,
)

# Who asks, as the load sends it (tests.chaos.load): the gateway keeps these headers to
# itself, and forwards x-account-id and x-organization-id for the mock's ledger.
IDENTITY = """\
version: 1
identity:
  account_header: x-chaos-account
  organization_header: x-chaos-org
"""

Row = dict[str, Any]


async def poll(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    """Await ``check`` every 100 ms until it holds; returns the seconds it took, or raises
    naming ``what`` after ``seconds``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what} did not happen within {seconds:g} s.")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


class Harness:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.services: list[Service] = []
        self.mock: MockUpstream | None = None
        self.replicas: list[Replica] = []
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))

    # --- starting things -------------------------------------------------------------

    def policy(self, body: str, name: str = "policies.yaml") -> Path:
        """A policy file: the shared ``IDENTITY`` section, then ``body``."""
        path = self.workdir / name
        path.write_text(IDENTITY + body)
        return path

    def redis(self) -> PrivateRedis:
        server = PrivateRedis(self.workdir / f"redis-{len(self.services)}")
        self.services.append(server)
        server.start()
        return server

    def upstream(self, *, output_tokens: int = 40, token_delay: float = 0.01) -> MockUpstream:
        mock = MockUpstream(self.workdir, output_tokens=output_tokens, token_delay=token_delay)
        self.services.append(mock)
        mock.start()
        self.mock = mock
        return mock

    def start_replicas(
        self, count: int, *, storage: str, policies: Path, env: dict[str, str] | None = None
    ) -> list[Replica]:
        """``count`` more replicas on ``storage``, started together, each answering. Each is
        told the fleet's size (``GATEWAY_EXPECTED_REPLICAS``), as an operator would: during
        an outage each replica may then admit its share of a limit, not all of it."""
        if self.mock is None:
            raise RuntimeError("Start the upstream before the replicas.")
        fleet = {"GATEWAY_EXPECTED_REPLICAS": str(len(self.replicas) + count), **(env or {})}
        fresh = [
            Replica(
                self.workdir,
                len(self.replicas) + i,
                storage=storage,
                upstream=self.mock.url,
                policies=policies,
                env=fleet,
            )
            for i in range(count)
        ]
        self.services.extend(fresh)
        self.replicas.extend(fresh)
        for replica in fresh:
            replica.spawn()
        for replica in fresh:
            replica.wait_until_ready()
        return fresh

    def urls(self, replicas: Iterable[Replica] | None = None) -> list[str]:
        return [r.url for r in (self.replicas if replicas is None else replicas)]

    async def burst(
        self, shots: Sequence[Shot], *, concurrency: int = 64, deadline_s: float = 90.0
    ) -> list[Outcome]:
        """Every shot, spread over the replicas in turn (see ``load.burst``)."""
        return await burst(self.urls(), shots, concurrency=concurrency, deadline_s=deadline_s)

    async def send(self, replica: Replica, shot: Shot) -> Outcome:
        """One request through ``replica``."""
        async with client(replica.url, 1) as http:
            return await send(http, shot, replica.index)

    # --- asking things ---------------------------------------------------------------

    def _mock(self) -> MockUpstream:
        if self.mock is None:
            raise RuntimeError("No upstream was started.")
        return self.mock

    async def ledger(self) -> Ledger:
        response = await self.http.get(f"{self._mock().url}/mock/ledger")
        response.raise_for_status()
        return Ledger(response.json())

    async def mock_stats(self) -> dict[str, int]:
        response = await self.http.get(f"{self._mock().url}/mock/stats")
        response.raise_for_status()
        stats: dict[str, int] = response.json()
        return stats

    async def usage(self, replica: Replica, scope: str, scope_id: str) -> dict[str, Row]:
        """``metric`` → the row of the policy of ``scope`` that limits it (one per metric)."""
        response = await self.http.get(
            f"{replica.admin_url}/v1/usage/{scope}/{scope_id}", headers=AUTH
        )
        response.raise_for_status()
        return {row["metric"]: row for row in response.json()["limits"]}

    async def linked(self, replica: Replica, account: str) -> bool:
        """Whether ``replica`` reads ``account`` as linked to another from the store."""
        response = await self.http.get(f"{replica.admin_url}/v1/accounts/{account}", headers=AUTH)
        response.raise_for_status()
        return bool(response.json()["linked"])

    async def in_flight(self, replica: Replica, scopes: Sequence[tuple[str, str]]) -> int:
        """Concurrency slots held in ``scopes``, as ``replica`` reads them from the store."""
        held = 0
        for scope, scope_id in scopes:
            row = (await self.usage(replica, scope, scope_id)).get("concurrent")
            if row is not None:
                held += int(row["used"])
        return held

    async def settled(
        self, replica: Replica, scopes: Sequence[tuple[str, str]], seconds: float = 15.0
    ) -> None:
        """Nothing left in flight: no concurrency slot held in ``scopes``, nothing running
        at the upstream and no ledger entry still open, within ``seconds``."""

        async def quiet() -> bool:
            if (await self.mock_stats())["active"] or (await self.ledger()).active():
                return False
            return await self.in_flight(replica, scopes) == 0

        try:
            await poll(quiet, seconds, "Every concurrency slot coming back")
        except AssertionError:
            held = {f"{s}/{i}": await self.in_flight(replica, [(s, i)]) for s, i in scopes}
            stats = await self.mock_stats()
            raise AssertionError(
                f"Still in flight after {seconds:g} s: slots {held}, upstream {stats}."
            ) from None

    # --- ending -----------------------------------------------------------------------

    def tails(self) -> str:
        """The warnings and errors each process logged last: for a failure message."""
        return "\n".join(f"--- {s.name} ---\n{s.tail(12, quiet=True)}" for s in self.services)

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()

    async def aclose(self) -> None:
        try:
            await self.http.aclose()
        finally:
            await asyncio.to_thread(self.close)
