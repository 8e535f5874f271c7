"""The gateway command as a shell sees it: exit codes and the sentences on stderr."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path

import httpx

from gateway.cli import build_parser
from gateway.settings import Settings
from tests.servers import free_port

ROOT = Path(__file__).parents[1]


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or {"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_serve_without_upstream_exits_with_one_sentence() -> None:
    result = gateway("serve", "--policies", "policies/default.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gateway: No upstream: set --upstream or GATEWAY_UPSTREAM to the model API's base URL, "
        "e.g. https://api.anthropic.com."
    )


def test_serve_without_policies_says_what_to_set() -> None:
    result = gateway("serve", "--upstream", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "No policies: set --policies or GATEWAY_POLICIES" in result.stderr


def test_serve_refuses_a_policy_file_that_fails_the_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicies:\n  - name: x\n    scope: account\n    limts: {}\n")
    result = gateway("serve", "--upstream", "http://127.0.0.1:1", "--policies", str(bad))
    assert result.returncode == 1
    assert f"{bad}:5:5: policies[0].limts: unknown key 'limts'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_exits_zero_on_the_shipped_policies_and_one_on_a_bad_file(tmp_path: Path) -> None:
    good = gateway("check", "policies/default.yaml")
    assert good.returncode == 0
    assert good.stdout.startswith("policies/default.yaml: ok, ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\npolicies: []\n")
    result = gateway("check", str(bad))
    assert result.returncode == 1
    assert str(bad) in result.stderr


def test_report_shadow_reads_the_storage_and_says_when_it_has_none(redis_url: str) -> None:
    import json
    import os

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = gateway("report", "shadow", "--storage", redis_url, "--json", env=env)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    missing = gateway("report", "shadow", env=env)
    assert missing.returncode == 2
    assert "No storage: set --storage or GATEWAY_STORAGE" in missing.stderr


def _commands(
    parser: argparse.ArgumentParser, path: str = "gateway"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and subcommand of the tree, with its path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, f"{path} {name}")


def test_every_argument_of_every_command_has_help() -> None:
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []
    commands = [
        f"{path} {choice.dest}"
        for path, parser in _commands(build_parser())
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert commands == []


def test_serve_help_shows_each_default_once_as_settings_has_it() -> None:
    result = gateway("serve", "--help")
    assert result.returncode == 0
    assert "object at 0x" not in result.stdout
    assert "--upstream-client" in result.stdout
    (serve,) = [parser for path, parser in _commands(build_parser()) if path == "gateway serve"]
    defaults = {f.name: f.default for f in fields(Settings)}
    for action in serve._actions:
        if action.dest == "help":
            continue
        text = str(action.help)
        assert text.count("default") <= 1, text
        default = defaults[action.dest]
        if default is None or default is MISSING:
            assert "default" not in text.replace("(default host/pid)", ""), text
        elif action.dest == "max_body_bytes":
            assert "(default 10 MiB)" in text
        else:
            assert f"(default {default})" in text, text
    client = next(a for a in serve._actions if a.dest == "upstream_client")
    assert client.help == "aiohttp or httpx (default aiohttp); env GATEWAY_UPSTREAM_CLIENT"


def test_the_same_port_for_proxy_and_admin_stops_before_start() -> None:
    result = gateway(
        "serve",
        "--upstream",
        "http://127.0.0.1:1",
        "--policies",
        "policies/default.yaml",
        "--port",
        "18090",
        "--admin-port",
        "18090",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gateway: --port and --admin-port are both 18090 on 127.0.0.1 and 127.0.0.1; give the "
        "proxy and the admin listener different ports."
    )


def _serve_until_ready(*flags: str) -> list[str]:
    """Run a real ``gateway serve`` until its admin listener answers, stop it, and return
    what it wrote to stderr, line by line."""
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway", "serve", "--upstream", "http://127.0.0.1:1"),
            *("--policies", "policies/default.yaml", "--port", str(port)),
            *("--admin-port", str(admin_port), *flags),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"http://127.0.0.1:{admin_port}/healthz"):
            assert process.poll() is None and time.monotonic() < deadline, "it never started"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    return err.splitlines()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_json_logs_are_json_without_colour_codes() -> None:
    lines = _serve_until_ready("--log-format", "json")
    entries = [json.loads(line) for line in lines]
    assert any("Uvicorn running" in entry["message"] for entry in entries)  # uvicorn's own
    # uvicorn gives its lines again with ANSI colours as an extra field; none may get through.
    coloured = [e for e in entries if any("\x1b" in str(value) for value in e.values())]
    assert coloured == []


def test_log_level_warning_leaves_out_the_info_lines() -> None:
    assert any(" INFO " in line for line in _serve_until_ready())
    quiet = _serve_until_ready("--log-level", "warning")
    assert not [line for line in quiet if " INFO " in line]


def test_serve_runs_on_uvloop_unless_asyncio_is_asked_for() -> None:
    assert any("event loop uvloop.Loop, HTTP parser h11" in line for line in _serve_until_ready())
    chosen = _serve_until_ready("--loop", "asyncio")
    assert any("event loop asyncio.unix_events._UnixSelectorEventLoop" in line for line in chosen)
