"""Hot reload with real files and the real watcher.

Watcher tests set a 60 s poll so only the watcher can make them pass; they wait up to 5 s for
the new version and never assert how fast it came.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.policy import watch as watch_module
from gateway.policy.keys import hash_api_key
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet
from gateway.policy.reload import PolicyReloader


def policy(requests: int) -> str:
    return (
        "version: 1\n"
        "policies:\n"
        "  - name: per-account\n"
        "    scope: account\n"
        "    limits:\n"
        f"      requests: {requests}/minute\n"
    )


BROKEN = policy(60).replace("60/minute", "5 M/minute\n      tokens: 60")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class Engine:
    """The engine's side of a reload: the running set, every swap, every reported result."""

    def __init__(self, path: Path) -> None:
        self.running = load_policy_set(path)
        self.swaps: list[PolicySet] = []
        self.results: list[str] = []

    def swap(self, policies: PolicySet) -> None:
        self.running = policies
        self.swaps.append(policies)

    def reloader(self, path: Path, **options: Any) -> PolicyReloader:
        return PolicyReloader(
            path, lambda: self.running, self.swap, on_result=self.results.append, **options
        )

    def requests_per_minute(self) -> int:
        return self.running.policies[0].limits[0].amount


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(round(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {seconds}s")


async def until_watching(reloader: PolicyReloader, poke: Callable[[], object]) -> None:
    """Repeat a change that keeps the set as it is until the watcher reports a reload: the
    watcher starts in a background task, and a change made before it watches is missed."""
    first = reloader.last_result

    async def poked() -> bool:
        poke()
        await asyncio.sleep(0.1)
        return reloader.last_result is not first

    async with asyncio.timeout(5):
        while not await poked():
            pass


async def test_an_in_place_edit_is_picked_up(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(tmp_path)
    async with engine.reloader(tmp_path, poll_interval=60) as reloader:
        await until_watching(reloader, lambda: file.write_text(policy(60)))
        with file.open("r+") as handle:  # the same inode, rewritten
            handle.write(policy(30))
        await eventually(lambda: engine.requests_per_minute() == 30)
    assert len(engine.swaps) == 1 and engine.results.count("ok") == 1
    assert reloader.last_good.version == engine.running.version


async def test_an_atomic_replace_of_a_single_file_is_picked_up(tmp_path: Path) -> None:
    """Watching the file itself would follow the old inode; the folder sees the rename."""
    file = write(tmp_path / "policy.yaml", policy(60))
    write(tmp_path / "other.yaml", "not: a policy\n")  # same folder, not the set
    engine = Engine(file)
    async with engine.reloader(file, poll_interval=60) as reloader:
        await until_watching(reloader, lambda: file.write_text(policy(60)))
        temp = write(tmp_path / ".policy.yaml.tmp", policy(30))
        os.replace(temp, file)
        await eventually(lambda: engine.requests_per_minute() == 30)
    assert len(engine.swaps) == 1 and engine.results.count("ok") == 1
    assert reloader.last_good.sources == (str(file),)


@pytest.mark.parametrize("single_file", [False, True], ids=["folder", "file"])
async def test_a_configmap_update_is_picked_up(tmp_path: Path, single_file: bool) -> None:
    """Kubernetes writes a new ..<timestamp>/ folder and renames a new ..data link over the old."""

    def update(name: str) -> None:
        os.symlink(name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    write(tmp_path / "..2026_11_27_10_00_00.1" / "policy.yaml", policy(60))
    update("..2026_11_27_10_00_00.1")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    path = tmp_path / "policy.yaml" if single_file else tmp_path
    engine = Engine(path)
    async with engine.reloader(path, poll_interval=60) as reloader:
        await until_watching(reloader, lambda: update("..2026_11_27_10_00_00.1"))
        write(tmp_path / "..2026_11_27_10_05_00.2" / "policy.yaml", policy(30))
        update("..2026_11_27_10_05_00.2")
        await eventually(lambda: engine.requests_per_minute() == 30)
    assert len(engine.swaps) == 1 and engine.results.count("ok") == 1


async def test_a_change_to_the_key_registry_is_picked_up(tmp_path: Path) -> None:
    """The registry lives in a sub-folder the policy folder's watch does not cover."""

    def registry(account: str) -> str:
        return f"keys:\n  - key_sha256: {hash_api_key('sk-1')}\n    account: {account}\n"

    folder = tmp_path / "policies"
    identity = "identity: {api_keys: {file: keys/keys.yaml}}\n"
    write(folder / "policy.yaml", policy(60).replace("policies:\n", identity + "policies:\n"))
    keys = write(folder / "keys" / "keys.yaml", registry("acct-1"))
    engine = Engine(folder)

    def account() -> str:
        return engine.running.identity.api_keys[hash_api_key("sk-1")].account

    async with engine.reloader(folder, poll_interval=60) as reloader:
        await until_watching(reloader, lambda: keys.write_text(registry("acct-1")))
        keys.write_text(registry("acct-2"))
        await eventually(lambda: account() == "acct-2")


async def test_the_poll_finds_a_change_with_the_watcher_off(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    async with engine.reloader(file, poll_interval=0.1, watch=False):
        await asyncio.sleep(0.3)  # a few polls of an unchanged file
        write(tmp_path / ".tmp", policy(30)).replace(file)
        await eventually(lambda: engine.requests_per_minute() == 30)
        await asyncio.sleep(0.3)
    assert engine.results == ["ok"]  # the poll reports news only, not each "unchanged"


async def test_the_poll_reports_files_put_back_after_a_failure(tmp_path: Path) -> None:
    """The failed-reload gauge must fall back to 0 when the files are the running set again,
    even when only the poll sees it (it reports no other "unchanged")."""
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    async with engine.reloader(file, poll_interval=0.1, watch=False):
        write(tmp_path / ".tmp", BROKEN).replace(file)
        await eventually(lambda: engine.results == ["failed"])
        write(tmp_path / ".tmp", policy(60)).replace(file)
        await eventually(lambda: engine.results == ["failed", "unchanged"])
        await asyncio.sleep(0.3)
    assert engine.results == ["failed", "unchanged"]  # once, not each poll after


async def test_a_failing_watcher_falls_back_to_the_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_watcher(*paths: object, **options: object) -> object:
        raise OSError(28, "OS file watch limit reached")

    monkeypatch.setattr(watch_module, "awatch", no_watcher)
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    async with engine.reloader(file, poll_interval=0.1):
        await eventually(lambda: "policy watcher failed" in caplog.text)
        file.write_text(policy(30))
        await eventually(lambda: engine.requests_per_minute() == 30)


def test_a_broken_file_keeps_the_last_good_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    reloader = engine.reloader(file)
    good = engine.running

    file.write_text(BROKEN)
    with caplog.at_level(logging.WARNING, logger="gateway.reload"):
        result = reloader.reload()
    problems = [
        f'{file}:6:17: policies[0].limits.requests: "5 M/minute" is not a limit; write '
        "AMOUNT/UNIT, e.g. 200k/minute (AMOUNT: digits with optional _ and k, M or B; UNIT: "
        "second, minute, hour, day or month)",
        f"{file}:7:15: policies[0].limits.tokens: 60 has no unit; write AMOUNT/UNIT, e.g. "
        "60/minute",
    ]
    assert (result.ok, result.changed, result.problems) == (False, False, problems)
    assert result.version == good.version
    assert engine.running is good and engine.swaps == []
    assert engine.results == ["failed"]
    assert reloader.last_result is result and reloader.last_good.version == good.version
    assert [r.getMessage() for r in caplog.records] == [
        f"policy reload failed, keeping {good.version}: {line}" for line in problems
    ]

    file.write_text(policy(30))
    fixed = reloader.reload()
    assert (fixed.ok, fixed.changed, fixed.problems) == (True, True, [])
    assert engine.requests_per_minute() == 30
    assert fixed.version == engine.running.version != good.version
    assert reloader.last_good is fixed
    assert engine.results == ["failed", "ok"]


def test_unchanged_files_are_not_swapped(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    reloader = engine.reloader(file)
    file.write_text(policy(60))  # rewritten, same bytes
    result = reloader.reload()
    assert (result.ok, result.changed, result.outcome) == (True, False, "unchanged")
    assert engine.swaps == [] and engine.results == ["unchanged"]


async def test_sighup_reloads_and_does_not_kill_the_process(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    async with engine.reloader(file, poll_interval=60, watch=False) as reloader:
        reloader.install_sighup(asyncio.get_running_loop())
        file.write_text(policy(30))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: engine.requests_per_minute() == 30)
    assert engine.results == ["ok"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # stop() removed the handler


async def test_areload_reads_in_a_thread_and_swaps(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    engine = Engine(file)
    reloader = engine.reloader(file)
    file.write_text(policy(30))
    result = await reloader.areload()
    assert result.changed and engine.requests_per_minute() == 30


def test_poll_interval_must_be_positive(tmp_path: Path) -> None:
    file = write(tmp_path / "policy.yaml", policy(60))
    with pytest.raises(ValueError, match="poll_interval must be positive, not 0"):
        Engine(file).reloader(file, poll_interval=0)
