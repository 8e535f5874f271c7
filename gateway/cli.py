"""The ``gateway`` command and its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields

from gateway import __version__
from gateway.admin.cli import add_admin_parser, run_admin
from gateway.errors import ConfigError, PolicyError, StorageError, WorkerError
from gateway.replay_command import add_replay_parser, run_replay
from gateway.settings import MIB, Settings, env_name, settings_from
from gateway.simulation.command import add_simulate_parser, run_simulate

_SERVE_FLAGS: list[tuple[str, type, str]] = [
    ("upstream", str, "base URL of the model API (required)"),
    ("policies", str, "a policy file, or a folder of *.yaml (required)"),
    (
        "storage",
        str,
        "memory://, redis://host:port/db, rediss://…, redis+cluster://h1:p1,h2:p2, "
        "redis+sentinel://h1:p1,h2:p2/master-name",
    ),
    ("host", str, "address the proxy listens on"),
    ("port", int, "port the proxy listens on"),
    ("admin_host", str, "address the admin listener binds (keep it on loopback)"),
    ("admin_port", int, "port of the admin listener: health, readiness, metrics, admin API"),
    ("admin_tokens_file", str, "YAML file of named admin-token SHA-256 digests"),
    ("replica_name", str, "this replica's name in audit entries (default host/pid)"),
    ("workers", int, "worker processes (above 1 needs shared storage)"),
    ("max_body_bytes", int, "largest request body accepted, bytes"),
    ("upstream_timeout", float, "seconds to wait for upstream data (read timeout)"),
    ("upstream_connect_timeout", float, "seconds to wait for an upstream connection"),
    ("storage_timeout", float, "seconds to wait for the counter store"),
    ("storage_connections", int, "counter-store calls at once per process"),
    ("storage_queue", int, "calls that may wait for a turn before requests are shed (503)"),
    ("storage_wait", float, "seconds a call may wait for its turn before it is shed (503)"),
    (
        "reservation_ttl",
        float,
        "seconds a reservation outlives an exchange that stopped extending it",
    ),
    ("expected_replicas", int, "replicas the outage fallback divides each limit by, at least"),
    ("link_retention_days", float, "days unused link data (signals, memberships) is kept"),
    ("max_held", int, "requests action: slow policies may hold at once"),
    ("decision_log", str, "write one JSON line per finished exchange to this file"),
    ("log_format", str, "text or json"),
    ("log_level", str, "debug, info, warning or error"),
    ("upstream_client", str, "aiohttp or httpx"),
    ("loop", str, "event loop: uvloop (libuv) or asyncio (the standard library's)"),
]


def _shown(value: object) -> str:
    """A default as a person reads it: 10 MiB rather than 10485760."""
    if isinstance(value, int) and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Rate-limiting and quota gateway for model APIs."
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Every flag is also a GATEWAY_* variable; a flag wins.",
    )
    defaults = {f.name: f.default for f in fields(Settings)}
    for name, kind, text in _SERVE_FLAGS:
        default = defaults.get(name, MISSING)
        shown = "" if default in (None, MISSING) else f" (default {_shown(default)})"
        serve.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            help=f"{text}{shown}; env {env_name(name)}",
        )

    check = commands.add_parser("check", help="check policy files offline")
    check.add_argument(
        "paths", nargs="+", metavar="PATH", help="policy files or folders of *.yaml to check"
    )

    mock = commands.add_parser("mock-upstream", help="run a fake model API")
    mock.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    mock.add_argument(
        "--port", type=int, default=9000, help="port to listen on (default %(default)s)"
    )
    mock.add_argument("--latency", type=float, default=None, help="seconds to first byte")
    mock.add_argument("--output-tokens", type=int, default=None, help="tokens per answer")
    mock.add_argument("--token-delay", type=float, default=None, help="seconds between deltas")
    add_admin_parser(commands)
    add_replay_parser(commands)
    add_simulate_parser(commands)

    report = commands.add_parser("report", help="print what the storage has recorded")
    report.add_argument("what", choices=["shadow"], help="shadow: would-be refusals by policy")
    report.add_argument("--storage", default=None, help="storage URI (env GATEWAY_STORAGE)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")

    demo = commands.add_parser("demo", help="a one-minute look through the real HTTP path")
    demo.add_argument(
        "--policies",
        default="policies/examples/6-linked-ring.yaml",
        help="the policy file the demo gateway runs (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check":
            return _check(args.paths)
        if args.command == "mock-upstream":
            return _mock(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "report":
            return _report(args)
        if args.command == "admin":
            return run_admin(args)
        if args.command == "replay":
            return run_replay(args)
        if args.command == "simulate":
            return run_simulate(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.policy.loader import load_policy_set
    from gateway.server import run

    settings = settings_from(vars(args))
    if settings.policies is None:
        raise ConfigError(
            "No policies: set --policies or GATEWAY_POLICIES to a policy file or folder "
            "(policies/default.yaml is a start)."
        )
    load_policy_set(settings.policies)  # refuse to start on a set that fails the check
    configure_logging(settings.log_format, settings.log_level)
    return run(settings)


def _check(paths: Sequence[str]) -> int:
    from gateway.policy.check import check_paths

    ok, lines = check_paths(paths)
    for line in lines:
        print(line, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _mock(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.mock_upstream import MockConfig, serve_mock

    overrides = {
        "latency_s": args.latency,
        "output_tokens": args.output_tokens,
        "token_delay_s": args.token_delay,
    }
    config = MockConfig(**{k: v for k, v in overrides.items() if v is not None})
    asyncio.run(serve_mock(args.host, args.port, config))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.demo import run_demo

    print(asyncio.run(run_demo(args.policies)).render())
    return 0


def _report(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from gateway.shadow import report_shadow

    storage = args.storage or os.environ.get(env_name("storage"))
    if not storage:
        raise ConfigError(
            "No storage: set --storage or GATEWAY_STORAGE to the Redis the gateways count in "
            "(a memory:// gateway keeps its report in its own process)."
        )
    print(asyncio.run(report_shadow(storage, args.json)))
    return 0
