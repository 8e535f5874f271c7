"""A closed-loop load generator for the gateway and the mock upstream; run it as its own process.

It keeps ``--concurrency`` requests in flight (one aiohttp session, one connection per
worker) until ``--duration`` seconds or ``--requests`` requests, whichever comes first,
after an optional warm-up whose results are thrown away. It prints one JSON object:
requests per second, latency percentiles, for streams the time to the first body byte
and to the first complete SSE event, CPU the load generator itself used, and errors by kind.

A streamed answer counts as an error unless it ends with its API's last event
(``message_stop`` for Anthropic, ``data: [DONE]`` for OpenAI): a stream cut short is a
failure even when its status was 200.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:9000 --api anthropic \\
        --stream --concurrency 16 --duration 10 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
LAST_EVENT = {"anthropic": b"event: message_stop", "openai": b"data: [DONE]"}
ALLOWED_HOSTS = ("127.0.0.1",)
MAX_CONCURRENCY = 1024
MAX_DURATION = 600.0
MEASURE_START = "loadgen: measuring"
MEASURE_END = "loadgen: measured"


@dataclass(frozen=True, slots=True)
class Plan:
    url: str
    api: str
    stream: bool
    concurrency: int
    duration: float
    requests: int | None
    warmup: float
    accounts: int
    max_tokens: int
    timeout: float


@dataclass
class Tally:
    """What one phase (warm-up or measurement) saw."""

    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    first_events: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    started: int = 0
    bytes_read: int = 0


def request_body(api: str, stream: bool, max_tokens: int) -> bytes:
    body: dict[str, Any] = {
        "model": "claude-bench" if api == "anthropic" else "gpt-bench",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say something short about rate limits."}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def request_headers(api: str, account: str) -> dict[str, str]:
    headers = {
        "content-type": "application/json",
        "x-account-id": account,
        "x-organization-id": "org-bench",
    }
    if api == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
        headers["x-api-key"] = "bench-not-a-key"
    else:
        headers["authorization"] = "Bearer bench-not-a-key"
    return headers


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def one_request(
    session: aiohttp.ClientSession,
    plan: Plan,
    body: bytes,
    headers: dict[str, str],
    tally: Tally,
) -> None:
    start = time.perf_counter()
    first_byte: float | None = None
    first_event: float | None = None
    tail = b""
    try:
        async with session.post(plan.url + PATHS[plan.api], data=body, headers=headers) as resp:
            tally.statuses[resp.status] += 1
            if plan.stream:
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    if first_byte is None:
                        first_byte = now
                    tally.bytes_read += len(chunk)
                    tail = (tail + chunk)[-512:]
                    if first_event is None and b"\n\n" in tail:
                        first_event = now
            else:
                data = await resp.read()
                tally.bytes_read += len(data)
                tail = data[-512:]
            status = resp.status
    except TimeoutError:
        tally.errors["timeout"] += 1
        return
    except aiohttp.ClientError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    end = time.perf_counter()
    if status >= 400:
        tally.errors[f"http_{status}"] += 1
        return
    if plan.stream and LAST_EVENT[plan.api] not in tail:
        tally.errors["stream_incomplete"] += 1
        return
    tally.latencies.append(end - start)
    if first_byte is not None:
        tally.first_bytes.append(first_byte - start)
    if first_event is not None:
        tally.first_events.append(first_event - start)


async def run_phase(
    session: aiohttp.ClientSession, plan: Plan, seconds: float, limit: int | None
) -> tuple[Tally, float]:
    """Keep ``plan.concurrency`` requests in flight for ``seconds`` or ``limit`` requests."""
    tally = Tally()
    body = request_body(plan.api, plan.stream, plan.max_tokens)
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        sent = 0
        while time.perf_counter() < deadline and (limit is None or tally.started < limit):
            tally.started += 1
            account = f"acct-{(index + sent * plan.concurrency) % plan.accounts}"
            sent += 1
            await one_request(session, plan, body, request_headers(plan.api, account), tally)

    began = time.perf_counter()
    workers = [asyncio.create_task(worker(i)) for i in range(plan.concurrency)]
    # Requests in flight at the deadline may finish; none may outlive its own timeout.
    _, late = await asyncio.wait(workers, timeout=seconds + plan.timeout + 5)
    for task in late:
        task.cancel()
    if late:
        await asyncio.gather(*late, return_exceptions=True)
        tally.errors["cancelled_at_end"] += len(late)
    return tally, time.perf_counter() - began


def summarize(tally: Tally, elapsed: float, plan: Plan, cpu_s: float) -> dict[str, Any]:
    ms = 1000.0
    completed = len(tally.latencies)

    def pct(values: list[float], fraction: float) -> float | None:
        found = percentile(values, fraction)
        return None if found is None else round(found * ms, 3)

    return {
        "url": plan.url,
        "api": plan.api,
        "stream": plan.stream,
        "concurrency": plan.concurrency,
        "elapsed_s": round(elapsed, 3),
        "started": tally.started,
        "completed": completed,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "requests_per_s": round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": pct(tally.latencies, 0.50),
            "p99": pct(tally.latencies, 0.99),
            "mean": round(sum(tally.latencies) / completed * ms, 3) if completed else None,
            "max": round(max(tally.latencies) * ms, 3) if completed else None,
        },
        "first_byte_ms": {"p50": pct(tally.first_bytes, 0.5), "p99": pct(tally.first_bytes, 0.99)}
        if plan.stream
        else None,
        "first_event_ms": {
            "p50": pct(tally.first_events, 0.5),
            "p99": pct(tally.first_events, 0.99),
        }
        if plan.stream
        else None,
        "bytes_read": tally.bytes_read,
        "loadgen_cpu_s": round(cpu_s, 3),
        "loadgen_cpu_pct": round(100.0 * cpu_s / elapsed, 1) if elapsed > 0 else 0.0,
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(plan: Plan) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=plan.concurrency, limit_per_host=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm: dict[str, Any] | None = None
        if plan.warmup > 0:
            tally, elapsed = await run_phase(session, plan, plan.warmup, None)
            warm = {
                "completed": len(tally.latencies),
                "errors": sum(tally.errors.values()),
                "errors_by_kind": dict(tally.errors),
            }
        # Markers on stderr let a caller sample other processes' CPU over exactly this phase.
        print(MEASURE_START, file=sys.stderr, flush=True)
        cpu_before = cpu_seconds()
        tally, elapsed = await run_phase(session, plan, plan.duration, plan.requests)
        cpu_used = cpu_seconds() - cpu_before
        print(MEASURE_END, file=sys.stderr, flush=True)
        result = summarize(tally, elapsed, plan, cpu_used)
    result["warmup"] = warm
    return result


def parse_plan(argv: Sequence[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api", choices=sorted(PATHS), default="anthropic")
    parser.add_argument("--stream", action="store_true", help="ask for an SSE answer")
    parser.add_argument("--concurrency", type=int, default=16, help="requests kept in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to measure")
    parser.add_argument("--requests", type=int, default=None, help="stop after this many")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring")
    parser.add_argument("--accounts", type=int, default=100, help="distinct x-account-id values")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)

    parts = urlsplit(args.url)
    if parts.scheme != "http" or parts.hostname not in ALLOWED_HOSTS:
        parser.error(f"--url {args.url!r} is not http://127.0.0.1:PORT; only loopback is allowed.")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}.")
    if not 0 < args.duration <= MAX_DURATION or not 0 <= args.warmup <= MAX_DURATION:
        parser.error(f"--duration and --warmup must be at most {MAX_DURATION:.0f} seconds.")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be at least 1.")
    if args.accounts < 1 or args.timeout <= 0:
        parser.error("--accounts and --timeout must be positive.")
    return Plan(
        url=args.url.rstrip("/"),
        api=args.api,
        stream=args.stream,
        concurrency=args.concurrency,
        duration=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        accounts=args.accounts,
        max_tokens=args.max_tokens,
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_plan(argv)
    result = asyncio.run(run(plan))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
