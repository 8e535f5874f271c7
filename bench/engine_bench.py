"""Budget-engine throughput: reserve+settle pairs per second from one Python process.

A three-scope policy (account, organization, cluster; requests, tokens and concurrency)
on a private ``redis-server`` on a free port, beside ``redis-benchmark -t incr`` on the
same server in the same run, and the same engine on ``memory://``. Prints a markdown table.

    .venv/bin/python bench/engine_bench.py [--pairs 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from gateway.budget.decision import Subject
from gateway.budget.engine import BudgetEngine
from gateway.budget.holder import PolicyHolder
from gateway.budget.store import CounterStore
from gateway.metering import RequestEstimate, Usage
from gateway.policy.model import (
    IdentityConfig,
    Limit,
    Metric,
    Policy,
    PolicySet,
    Scope,
    Unit,
)
from gateway.storage.connection import open_store

BIG = 10**12  # never binds: measure the work, not refusals
POLICIES = PolicySet(
    version="bench",
    sources=(),
    identity=IdentityConfig(),
    policies=tuple(
        Policy(
            f"{scope.value}-budget",
            scope,
            (
                Limit(Metric.REQUESTS, BIG, Unit.MINUTE),
                Limit(Metric.TOKENS, BIG, Unit.DAY),
                Limit(Metric.CONCURRENT, BIG, None),
            ),
        )
        for scope in Scope
    ),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def pairs_per_second(store: CounterStore, pairs: int, concurrency: int) -> float:
    engine = BudgetEngine(store, PolicyHolder(POLICIES))
    estimate = RequestEstimate("m", 1000, 400, stream=False)
    usage = Usage(input_tokens=1000, output_tokens=120)
    queue = iter(range(pairs))

    async def worker() -> None:
        for i in queue:
            subject = Subject(f"a{i % 500}", f"o{i % 50}", attributes={"model": "m"})
            decision = await engine.reserve(f"req-{i}", subject, estimate)
            assert decision.admitted
            await engine.settle(f"req-{i}", usage)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pairs / (time.perf_counter() - started)


def usec_per_call(port: int, command: str) -> float:
    info = redis.Redis(port=port).info("commandstats")
    stats = info.get(f"cmdstat_{command}", {})
    return float(stats.get("usec_per_call", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port, workdir = free_port(), tempfile.mkdtemp(prefix="engine-bench-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        store = open_store(f"redis://127.0.0.1:{port}/0", max_connections=args.concurrency)
        on_redis = asyncio.run(_run(store, args.pairs, args.concurrency))
        evalsha_us = usec_per_call(port, "evalsha")
        on_memory = asyncio.run(_run(open_store("memory://"), args.pairs, args.concurrency))
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "incr", "-n", "200000", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        incr = float(re.findall(r"INCR: ([\d.]+) requests per second", out.replace("\r", "\n"))[-1])
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"| what ({args.pairs} pairs, {args.concurrency} concurrent) | per second | note |")
    print("|---|---:|---|")
    note = f"{evalsha_us:.1f} µs of Redis time per script call"
    print(f"| engine reserve+settle, Redis | {on_redis:,.0f} | {note} |")
    print(f"| engine reserve+settle, memory:// | {on_memory:,.0f} | |")
    print(f"| redis-benchmark -t incr -n 200000 | {incr:,.0f} | same server, same run |")


async def _run(store: CounterStore, pairs: int, concurrency: int) -> float:
    try:
        return await pairs_per_second(store, pairs, concurrency)
    finally:
        await store.aclose()


if __name__ == "__main__":
    main()
