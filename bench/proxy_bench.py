"""What the gateway costs per request: direct to the mock upstream versus through the gateway.

Every party is its own process: the mock upstream (``gateway mock-upstream``), the gateway
(``gateway serve``), and the load generator (``bench/loadgen.py``), which this script starts
once per cell and reads one JSON line from. Two sets of cells:

* clients: direct, gateway with ``--upstream-client aiohttp`` (on uvloop, and on the
  stock asyncio loop beside it), gateway with ``httpx``; JSON and SSE; concurrency 1, 16
  and 64; no policy, ``memory://`` storage.
* budget: the gateway (aiohttp) with no policy on Redis, three never-binding scopes on
  ``memory://``, and the same three scopes on Redis db 15 (on uvloop, and on asyncio).

It prints markdown tables and writes the raw numbers, the machine and the commands to
``bench/results/proxy_bench-<UTC time>.json`` (and the tables beside it as ``.md``).

    .venv/bin/python bench/proxy_bench.py            # about 8 minutes on 2 cores
    .venv/bin/python bench/proxy_bench.py --quick    # a 1-minute smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import MEASURE_END, MEASURE_START

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = ROOT / ".venv" / "bin"
GATEWAY = str(VENV_BIN / "gateway")
PYTHON = str(VENV_BIN / "python")
RESULTS = BENCH / "results"
OPEN_POLICY = BENCH / "policies" / "open.yaml"
THREE_SCOPES = BENCH / "policies" / "three-scopes.yaml"
REDIS_URL = "redis://127.0.0.1:6379/15"
MACHINE = "machine"  # the key of whole-machine CPU in a cell's cpu_pct
ACCOUNTS = 20  # three-scopes.yaml links acct-0 … acct-19 into two clusters
PACKAGES = (
    "aiohttp", "httpx", "httpcore", "h11", "uvicorn", "starlette", "anyio",
    "redis", "hiredis", "pydantic", "uvloop", "httptools",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mode:
    """One way the mock upstream answers, and the flags that make it answer that way."""

    name: str
    stream: bool
    latency: float
    output_tokens: int
    token_delay: float

    def flags(self) -> list[str]:
        return [
            "--latency", str(self.latency),
            "--output-tokens", str(self.output_tokens),
            "--token-delay", str(self.token_delay),
        ]  # fmt: skip


JSON_MODE = Mode("json", stream=False, latency=0.0, output_tokens=16, token_delay=0.001)
SSE_MODE = Mode("sse", stream=True, latency=0.05, output_tokens=12, token_delay=0.03)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes: straight to the mock, or through a gateway started like this."""

    name: str
    client: str | None = None  # None: direct to the mock upstream
    policies: Path = OPEN_POLICY
    storage: str = "memory://"
    loop: str = "uvloop"  # gateway serve --loop


CLIENT_TARGETS = (
    Target("direct"),
    Target("gateway-aiohttp", "aiohttp"),
    Target("gateway-aiohttp-asyncio", "aiohttp", loop="asyncio"),  # the stock loop, beside
    Target("gateway-httpx", "httpx"),
)
BUDGET_TARGETS = (
    Target("no-policy-redis", "aiohttp", OPEN_POLICY, REDIS_URL),
    Target("three-scopes-memory", "aiohttp", THREE_SCOPES, "memory://"),
    Target("three-scopes-redis", "aiohttp", THREE_SCOPES, REDIS_URL),
    Target("three-scopes-redis-asyncio", "aiohttp", THREE_SCOPES, REDIS_URL, loop="asyncio"),
)


SECTIONS: tuple[tuple[str, str, Sequence[Target]], ...] = (
    ("clients", "Direct vs through the gateway (no policy, memory://)", CLIENT_TARGETS),
    ("budget", "Budget cost through the gateway (aiohttp)", BUDGET_TARGETS),
)


@dataclass
class Service:
    """A process this script started, with its log and its CPU time so far."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    exits: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> float | None:
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields_ = stat.rpartition(")")[2].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(name: str, command: list[str], logs: Path) -> Service:
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    return Service(name, command, log_path, process)


def stop(service: Service) -> int | None:
    """SIGTERM the one process started, then SIGKILL it after 15 s; returns its exit code."""
    if service.alive():
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=5)
    return service.process.returncode


def wait_until(service: Service, url: str, ok: Sequence[int], seconds: float = 30.0) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; fail if the process exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not service.alive():
            tail = "\n".join(service.log_tail())
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not answer {url} within {seconds:.0f} s")


@contextlib.contextmanager
def running(
    name: str, command: list[str], logs: Path, ready: str, ok: Sequence[int]
) -> Iterator[Service]:
    service = start(name, command, logs)
    try:
        wait_until(service, ready, ok)
        yield service
    finally:
        code = stop(service)
        service.exits.append(f"exit code {code}")


def mock_command(mode: Mode, port: int) -> list[str]:
    return [GATEWAY, "mock-upstream", "--port", str(port), *mode.flags()]


def gateway_command(target: Target, upstream: str, port: int, admin_port: int) -> list[str]:
    if target.client is None:
        raise ValueError(f"target {target.name!r} goes direct; it has no gateway to start")
    return [
        GATEWAY, "serve",
        "--upstream", upstream,
        "--policies", str(target.policies.relative_to(ROOT)),
        "--storage", target.storage,
        "--upstream-client", target.client,
        "--loop", target.loop,
        "--port", str(port),
        "--admin-port", str(admin_port),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Timing:
    warmup: float
    seconds: float
    concurrencies: tuple[int, ...]
    api: str


def run_cell(
    url: str, mode: Mode, concurrency: int, timing: Timing, watched: Sequence[Service]
) -> dict[str, Any]:
    command = [
        PYTHON, str(BENCH / "loadgen.py"),
        "--url", url,
        "--api", timing.api,
        "--concurrency", str(concurrency),
        "--duration", str(timing.seconds),
        "--warmup", str(timing.warmup),
        "--accounts", str(ACCOUNTS),
    ]  # fmt: skip
    if mode.stream:
        command.append("--stream")
    loadgen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    before: dict[str, float | None] = {}
    after: dict[str, float | None] = {}
    window = (0.0, 0.0)
    for line in loadgen.stderr or ():
        if line.strip() == MEASURE_START:
            before = {s.name: s.cpu_seconds() for s in watched}
            before[MACHINE] = machine_busy_seconds()
            window = (time.monotonic(), 0.0)
        elif line.strip() == MEASURE_END:
            after = {s.name: s.cpu_seconds() for s in watched}
            after[MACHINE] = machine_busy_seconds()
            window = (window[0], time.monotonic())
            break
        else:
            stderr.append(line)
    out, rest = loadgen.communicate(timeout=timing.warmup + timing.seconds + 120)
    stderr.append(rest)
    if loadgen.returncode != 0 or not after:
        return {"failed": True, "command": command, "stderr": "".join(stderr)[-4000:]}
    result: dict[str, Any] = json.loads(out)
    result["command"] = command
    # CPU each watched process used while the loadgen measured, as a share of one core.
    seconds = window[1] - window[0]
    result["cpu_pct"] = {
        name: cpu_share(before.get(name), after.get(name), seconds) for name in after
    }
    # What neither the watched processes nor the load generator used: other work on the machine.
    ours = sum(v for k, v in result["cpu_pct"].items() if k != MACHINE and v is not None)
    busy = result["cpu_pct"][MACHINE]
    result["cpu_pct"]["others"] = (
        None if busy is None else round(busy - ours - result["loadgen_cpu_pct"], 1)
    )
    result["alive_after"] = {s.name: s.alive() for s in watched}
    result["loadavg_after"] = os.getloadavg()
    return result


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_share(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None or seconds <= 0:
        return None
    return round(100.0 * (after - before) / seconds, 1)


def measure(
    targets: Sequence[Target], modes: Sequence[Mode], timing: Timing, logs: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mode in modes:
        mock_port = free_port()
        mock_url = f"http://127.0.0.1:{mock_port}"
        command = mock_command(mode, mock_port)
        with running(f"mock-{mode.name}", command, logs, mock_url + "/mock/stats", (200,)) as mock:
            for target in targets:
                rows.extend(measure_target(target, mode, mock, mock_url, timing, logs))
    return rows


def measure_target(
    target: Target, mode: Mode, mock: Service, mock_url: str, timing: Timing, logs: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if target.client is None:
        for concurrency in timing.concurrencies:
            rows.append(cell_row(target, mode, concurrency, mock_url, timing, [mock]))
        return rows
    port, admin_port = free_port(), free_port()
    name = f"gateway-{target.name}-{mode.name}"
    command = gateway_command(target, mock_url, port, admin_port)
    ready = f"http://127.0.0.1:{admin_port}/readyz"
    try:
        with running(name, command, logs, ready, (200,)) as gateway:
            for concurrency in timing.concurrencies:
                if not gateway.alive():
                    rows.append(dead_row(target, mode, concurrency, str(gateway.log_tail(5))))
                    continue
                url = f"http://127.0.0.1:{port}"
                rows.append(cell_row(target, mode, concurrency, url, timing, [gateway, mock]))
            problems = [
                line
                for line in gateway.log_path.read_text(errors="replace").splitlines()
                if " ERROR " in line or " WARNING " in line or "Traceback" in line
            ]
    except RuntimeError as exc:  # the gateway did not start: every cell of it failed
        print(f"  {name} did not start: {exc}", file=sys.stderr)
        return [dead_row(target, mode, c, str(exc)) for c in timing.concurrencies]
    for row in rows:
        row["gateway_log_problems"] = len(problems)
        row["gateway_log_first_problems"] = problems[:5]
        row["gateway_exit"] = gateway.exits[-1] if gateway.exits else None
    return rows


def cell_row(
    target: Target,
    mode: Mode,
    concurrency: int,
    url: str,
    timing: Timing,
    watched: Sequence[Service],
) -> dict[str, Any]:
    label = f"{target.name} {mode.name} c={concurrency}"
    print(f"  {label} …", end="", flush=True, file=sys.stderr)
    result = run_cell(url, mode, concurrency, timing, watched)
    result.update(target=target.name, mode=mode.name, storage=target.storage)
    result["policies"] = None if target.client is None else target.policies.name
    if result.get("failed"):
        print(f" loadgen failed: {result['stderr'][-300:]}", file=sys.stderr)
    else:
        print(
            f" {result['requests_per_s']} req/s, p50 {result['latency_ms']['p50']} ms, "
            f"errors {result['errors']}",
            file=sys.stderr,
        )
    return result


def dead_row(target: Target, mode: Mode, concurrency: int, why: str) -> dict[str, Any]:
    return {
        "target": target.name,
        "mode": mode.name,
        "concurrency": concurrency,
        "failed": True,
        "stderr": f"gateway not running: {why}"[-4000:],
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [
        line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
    ]
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": models[0] if models else None,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "packages": versions,
        "redis_server": redis_version(),
        "git": git_state(),
    }


def redis_version() -> str | None:
    try:
        out = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "info", "server"], capture_output=True, text=True
        ).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return None


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "gateway_sources_sha256": sources_digest(),
    }


def sources_digest() -> str:
    """One hash over gateway/**/*.py: tells whether the code changed while the run went on."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| target | answer | C | req/s | p50 ms | p99 ms | first event p50 / p99 ms "
        "| errors | gateway CPU % | gateway CPU ms/req | mock CPU % | loadgen CPU % "
        "| others CPU % |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = []
    for row in rows:
        if row.get("failed"):
            lines.append(
                f"| {row['target']} | {row['mode']} | {row['concurrency']} "
                f"| FAILED: {row.get('stderr', '')[-120:]!r} | | | | | | | | | |"
            )
            continue
        latency = row["latency_ms"]
        event = row.get("first_event_ms") or {}
        first = f"{fmt(event.get('p50'))} / {fmt(event.get('p99'))}" if event else "-"
        cpu = row.get("cpu_pct", {})
        gateway_cpu = next((v for k, v in cpu.items() if k.startswith("gateway")), None)
        mock_cpu = next((v for k, v in cpu.items() if k.startswith("mock")), None)
        rate = row["requests_per_s"]
        per_request = None if gateway_cpu is None or not rate else 10.0 * gateway_cpu / rate
        errors = str(row["errors"])
        if row["errors"]:
            errors += " " + ", ".join(f"{k}: {v}" for k, v in row["errors_by_kind"].items())
        lines.append(
            f"| {row['target']} | {row['mode']} | {row['concurrency']} "
            f"| {fmt(row['requests_per_s'], 0)} "
            f"| {fmt(latency['p50'], 2)} | {fmt(latency['p99'], 2)} "
            f"| {first} | {errors} | {fmt(gateway_cpu, 0)} | {fmt(per_request, 2)} "
            f"| {fmt(mock_cpu, 0)} "
            f"| {fmt(row['loadgen_cpu_pct'], 0)} | {fmt(cpu.get('others'), 0)} |"
        )
    return head + "\n".join(lines) + "\n"


def render(report: dict[str, Any]) -> str:
    info, method = report["machine"], report["method"]
    header = (
        f"Machine: {info['nproc']} x {info['cpu_model']}, {info['memory_gib']} GiB, "
        f"Python {info['python']}, Redis {info['redis_server']}; "
        + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
        + f"\nCells: {method['warmup_s']:g} s warm-up + {method['measured_s']:g} s measured, "
        f"{method['api']} route, run started {report['started_utc']} UTC.\n"
    )
    tables = [f"### {title}\n\n{table(report[key])}" for key, title, _ in SECTIONS if key in report]
    return header + "\n" + "\n".join(tables)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Direct vs through-the-gateway benchmark.")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--api", choices=("anthropic", "openai"), default="anthropic")
    parser.add_argument("--only", choices=("clients", "budget"), default=None)
    parser.add_argument("--quick", action="store_true", help="1 s warm-up, 2 s cells")
    parser.add_argument("--table", type=Path, help="only print the tables of a saved result")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        saved = json.loads(args.table.read_text())
        print(render(saved))
        return 0
    if args.quick:
        args.seconds, args.warmup = 2.0, 1.0
    timing = Timing(args.warmup, args.seconds, tuple(args.concurrency), args.api)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / f"logs-{stamp}"
    logs.mkdir()
    report: dict[str, Any] = {
        "started_utc": stamp,
        "machine": machine(),
        "method": {
            "warmup_s": timing.warmup,
            "measured_s": timing.seconds,
            "concurrencies": list(timing.concurrencies),
            "api": timing.api,
            "accounts": ACCOUNTS,
            "modes": {m.name: m.flags() for m in (JSON_MODE, SSE_MODE)},
            "logs": str(logs.relative_to(ROOT)),
        },
    }
    modes = (JSON_MODE, SSE_MODE)
    for key, title, targets in SECTIONS:
        if args.only not in (None, key):
            continue
        print(f"{title}:", file=sys.stderr)
        report[key] = measure(targets, modes, timing, logs)
    report["finished_utc"] = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    report["gateway_sources_sha256_at_end"] = sources_digest()
    if (
        report["gateway_sources_sha256_at_end"]
        != report["machine"]["git"]["gateway_sources_sha256"]
    ):
        print("warning: gateway/ changed during the run; cells may mix versions", file=sys.stderr)
    out = RESULTS / f"proxy_bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"raw numbers: {out.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
