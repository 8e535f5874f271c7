"""``gateway admin`` against a real admin listener: output, --json, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from gateway.admin.cli import add_admin_parser, duration, run_admin
from gateway.app import create_admin_app
from gateway.settings import Settings
from tests.admin.conftest import TOKEN, in_process, small_policies
from tests.servers import free_port, running


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gateway")
    add_admin_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
async def admin_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    settings = Settings(upstream="http://127.0.0.1:9", admin_token=TOKEN)
    async with (
        in_process(settings, small_policies()) as gw,
        running(create_admin_app(gw.proxy), lifespan="off") as url,
    ):
        yield url


async def admin(url: str, *argv: str) -> int:
    # run_admin owns an event loop, as it does from the shell: give it a thread.
    return await asyncio.to_thread(run_admin, parse(["admin", "--url", url, *argv]))


async def test_override_set_list_clear(admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["override", "set", "account", "acct-1", "tokens=5M/day", "tokens=200k/minute"]
    assert await admin(admin_url, *argv, "--ttl", "6h", "--reason", "launch") == 0
    assert "tokens=5000000/day+200000/minute" in capsys.readouterr().out
    assert await admin(admin_url, "--json", "override", "list") == 0
    listed = json.loads(capsys.readouterr().out)["overrides"]
    assert listed[0]["limits"] == {"tokens": ["5000000/day", "200000/minute"]}
    assert await admin(admin_url, "usage", "account", "acct-1") == 0
    out = capsys.readouterr().out
    assert "POLICY" in out and "5000000/day" in out and "override" in out
    assert await admin(admin_url, "override", "clear", "account", "acct-1") == 0
    assert await admin(admin_url, "override", "clear", "account", "acct-1") == 1
    assert "No override is set" in capsys.readouterr().err
    assert await admin(admin_url, "audit") == 0
    out = capsys.readouterr().out
    assert "override.clear" in out and "override.set" in out and "launch" in out


async def test_exit_codes(
    admin_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await admin(admin_url, "override", "set", "account", "a", "tokens=5 M/day") == 1
    assert "AMOUNT: digits" in capsys.readouterr().err
    assert await admin(admin_url, "override", "set", "account", "a", "tokens") == 2
    assert await admin(admin_url, "usage", "planet", "a") == 1
    assert await admin(admin_url, "policies") == 0
    assert "version test" in capsys.readouterr().out
    assert await admin(admin_url, "reload") == 1  # policies given in code
    assert await admin(f"http://127.0.0.1:{free_port()}", "policies") == 2
    assert "no answer" in capsys.readouterr().err
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "wrong")
    assert await admin(admin_url, "policies") == 1
    assert "not valid" in capsys.readouterr().err


def test_durations() -> None:
    assert [duration(t) for t in ("90", "90s", "30m", "6h", "2d")] == [90, 90, 1800, 21600, 172800]
    with pytest.raises(argparse.ArgumentTypeError):
        duration("-5m")


async def test_link_cluster_unlink(admin_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await admin(admin_url, "link", "ring-7", "acct-8") == 0
    out = capsys.readouterr().out
    assert "in cluster ring-7 (1 account)" in out
    # The admin_url gateway runs no cluster policy: the link counts for nothing yet.
    assert "warning: No cluster policy is running" in out
    assert await admin(admin_url, "link", "ring-7", "acct-9") == 0
    assert "in cluster ring-7 (2 accounts)" in capsys.readouterr().out
    assert await admin(admin_url, "cluster", "ring-7") == 0
    assert "acct-8, acct-9" in capsys.readouterr().out
    assert await admin(admin_url, "unlink", "acct-9") == 0
    assert await admin(admin_url, "unlink", "acct-9") == 1
    assert "is in no cluster" in capsys.readouterr().err
    assert await admin(admin_url, "unlink", "acct-8") == 0  # the last member goes too
    assert "acct-8: linked to no other account" in capsys.readouterr().out
    assert await admin(admin_url, "cluster", "ring-7") == 1


async def test_url_and_json_go_before_or_after_the_command(
    admin_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    after = parse(["admin", "override", "list", "--url", admin_url, "--json"])
    assert await asyncio.to_thread(run_admin, after) == 0
    assert json.loads(capsys.readouterr().out)["overrides"] == []
    monkeypatch.setenv("GATEWAY_ADMIN_URL", admin_url)
    assert await asyncio.to_thread(run_admin, parse(["admin", "policies"])) == 0
    assert "version test" in capsys.readouterr().out
    elsewhere = f"http://127.0.0.1:{free_port()}"
    assert await asyncio.to_thread(run_admin, parse(["admin", "--url", elsewhere, "policies"])) == 2
    assert f"no answer from {elsewhere}" in capsys.readouterr().err  # --url wins over the env


def test_every_admin_command_takes_json_and_the_help_names_the_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (
        ["usage", "account", "a"],
        ["override", "list"],
        ["cluster", "c"],
        ["account", "a"],
        ["policies"],
        ["audit"],
    ):
        assert parse(["admin", *argv, "--json"]).json
    with pytest.raises(SystemExit):
        parse(["admin", "--help"])
    assert "GATEWAY_ADMIN_TOKEN" in capsys.readouterr().out
