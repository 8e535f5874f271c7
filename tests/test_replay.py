"""A decision log written by a live gateway, replayed under the same policies, decides alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gateway.admission import Admission
from gateway.app import create_app
from gateway.decision_log import DecisionLog, read_log
from gateway.metering import UsageRecord
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet
from gateway.replay import Tally, exchange_from_line, in_start_order, replay_lines
from gateway.settings import Settings
from tests.servers import running

POLICY = """\
version: 1
policies:
  - name: account-requests
    scope: account
    limits: {requests: 4/hour}
  - name: organization-output
    scope: organization
    limits: {output_tokens: 200/hour}
  - name: cluster-requests
    scope: cluster
    limits: {requests: 6/hour}
  - name: cluster-trial
    scope: cluster
    mode: shadow
    limits: {requests: 3/hour}
clusters:
  link_by:
    - header: x-payment-fingerprint
"""

# (account, organization, card): a1 and a2 share a card, so one cluster budget; a3 and a4
# share an organization, whose output budget a3 spends.
CALLERS = [
    ("a1", "o1", "card-1"),
    ("a2", "o2", "card-1"),
    ("a3", "o3", "card-3"),
    ("a4", "o3", "card-4"),
]
ORDER = [0, 1, 2, 0, 0, 1, 2, 0, 1, 2, 0, 3, 1, 2, 0, 1, 2, 3, 0, 1]


class Finished:
    """A hook after the decision log: the exchange is settled and its line written."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Condition()

    async def __call__(self, record: UsageRecord, admission: Admission | None) -> None:
        async with self.changed:
            self.count += 1
            self.changed.notify_all()

    async def reach(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.count >= count), 10)


async def live_run(policy_file: Path, log: Path) -> list[tuple[str, int]]:
    finished = Finished()
    upstream = create_mock_app(MockConfig(output_tokens=40, token_delay_s=0.0))
    async with running(upstream) as upstream_url:
        settings = Settings(upstream=upstream_url)
        policies = load_policy_set(policy_file)
        decision_log = DecisionLog(log)
        app = create_app(settings, policies=policies, hooks=[decision_log, finished])
        statuses = []
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            for n, index in enumerate(ORDER, start=1):
                account, organization, card = CALLERS[index]
                body = {
                    "model": "claude-test",
                    "max_tokens": 40,
                    "messages": [{"role": "user", "content": f"question {n}"}],
                }
                headers = {
                    "x-account-id": account,
                    "x-organization-id": organization,
                    "x-payment-fingerprint": card,
                }
                response = await client.post("/v1/messages", json=body, headers=headers)
                statuses.append((account, response.status_code))
                # One exchange at a time, each settled before the next begins: the order
                # the replay reconstructs from the logged times.
                await finished.reach(n)
        decision_log.close()
    return statuses


async def test_replay_of_a_live_log_under_the_same_policies_decides_alike(
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    log = tmp_path / "decisions.jsonl"
    statuses = await live_run(policy_file, log)
    lines = read_log(log)
    assert len(lines) == len(ORDER)
    assert {status for _, status in statuses} == {200, 429}
    assert {line["scope"] for line in lines} >= {"account", "organization", "cluster"}

    tally, decisions = await replay_decisions(lines, load_policy_set(policy_file))

    live = {line["request_id"]: line["decision"] == "admitted" for line in lines}
    assert dict(decisions) == live
    assert [rid for rid, _ in decisions] == [
        line["request_id"] for line in sorted(lines, key=lambda line: line["time"])
    ]
    assert tally.newly_refused == tally.newly_admitted == 0
    live_refused = sum(not admitted for admitted in live.values())
    assert sum(count.requests for count in tally.refused.values()) == live_refused
    live_shadow = sum(len(line["shadow_refusals"]) for line in lines)
    assert sum(count.requests for count in tally.shadow.values()) == live_shadow


async def test_replay_under_another_policy_counts_what_it_would_refuse(tmp_path: Path) -> None:
    lines = [
        {
            "time": 1_780_000_000.0 + i,
            "duration_s": 0.5,
            "request_id": f"r{i}",
            "outcome": "complete",
            "model": "m",
            "reserved": {"input_tokens": 10, "output_tokens": 100},
            "usage": {"input_tokens": 10, "output_tokens": 30},
            "account": "a1",
            "organization": None,
            "attributes": {},
            "signals": [],
            "decision": "admitted",
        }
        for i in range(5)
    ]
    lines.append({"decision": "unauthenticated", "time": 1_780_000_009.0})
    policy_file = tmp_path / "tight.yaml"
    policy_file.write_text(
        "version: 1\npolicies:\n  - name: two\n    scope: account\n    limits: {requests: 2/day}\n"
    )
    tally, decisions = await replay_decisions(lines, load_policy_set(policy_file))
    assert [admitted for _, admitted in decisions] == [True, True, False, False, False]
    assert tally.skipped == 1
    assert tally.newly_refused == 3
    assert tally.as_json()["policies"] == {
        "two": {"requests": 3, "tokens": 120, "accounts": 1, "clusters": 1}
    }


async def replay_decisions(
    lines: list[dict[str, Any]], policies: PolicySet, by: str | None = None
) -> tuple[Tally, list[tuple[str, bool]]]:
    """The tally, and per exchange in replay order (request id, admitted)."""
    decisions: list[tuple[str, bool]] = []
    tally = await replay_lines(
        lines, policies, by=by, each=lambda e, d: decisions.append((e.request_id, d.admitted))
    )
    return tally, decisions


def test_a_refused_line_is_settled_with_its_reservation() -> None:
    line = {
        "time": 1.0,
        "request_id": "r",
        "model": "m",
        "reserved": {"input_tokens": 10, "output_tokens": 100},
        "usage": {"input_tokens": 0, "output_tokens": 0},
        "account": "a",
        "decision": "refused",
    }
    exchange = exchange_from_line(line)
    assert exchange is not None and exchange.usage is not None
    assert (exchange.usage.input_tokens, exchange.usage.output_tokens) == (10, 100)
    unreached = {**line, "decision": "admitted", "outcome": "upstream_unreached"}
    failed = exchange_from_line(unreached)
    assert failed is not None and failed.usage is None
    # Sent, then failed: the log's usage (the input kept charged) is what replays.
    sent = {**unreached, "outcome": "upstream_error", "usage": {"input_tokens": 10}}
    sent["usage"]["output_tokens"] = 0
    failed = exchange_from_line(sent)
    assert failed is not None and failed.usage is not None
    assert failed.usage.input_tokens == 10


def logged(i: int, start: float, duration: float, tier: str | None) -> dict[str, object]:
    """One admitted line of an older log (no ``requests`` in ``reserved``)."""
    return {
        "time": start,
        "duration_s": duration,
        "request_id": f"r{i}",
        "outcome": "complete",
        "model": "m",
        "reserved": {"input_tokens": 10, "output_tokens": 100},
        "usage": {"input_tokens": 8, "output_tokens": 30},
        "account": f"a{i % 2}",
        "organization": None,
        "attributes": {} if tier is None else {"tier": tier},
        "signals": [],
        "decision": "admitted" if i < 4 else "refused",
    }


async def test_replay_by_attribute_counts_each_cohort(tmp_path: Path) -> None:
    """Accounts a0 and a1 may send one request a day each; per tier, what was offered
    (logged usage, or the reservation of a line refused live) and what got through."""
    base = 1_780_000_000.0
    lines = [
        logged(0, base, 1, "free"),
        logged(1, base + 1, 1, "pro"),
        logged(2, base + 2, 1, "free"),  # a0's second: refused by the replay
        logged(3, base + 3, 1, None),  # a1's second, an older line without the attribute
        logged(4, base + 4, 1, "pro"),  # refused live: offered its reservation
    ]
    policy_file = tmp_path / "one.yaml"
    policy_file.write_text(
        "version: 1\npolicies:\n  - name: one\n    scope: account\n    limits: {requests: 1/day}\n"
    )
    tally = await replay_lines(lines, load_policy_set(policy_file), by="tier")
    groups = tally.as_json()["groups"]
    assert groups["free"] == {
        "requests": 2,
        "admitted": 1,
        "refused": 1,
        "shaped": 0,
        "input_tokens_offered": 16,
        "input_tokens_admitted": 8,
        "output_tokens_offered": 60,
        "output_tokens_admitted": 30,
    }
    assert groups["pro"]["requests"] == 2 and groups["pro"]["admitted"] == 1
    assert groups["pro"]["input_tokens_offered"] == 8 + 10  # the refused line's reservation
    assert groups["pro"]["output_tokens_offered"] == 30 + 100
    unnamed = groups[""]
    assert (unnamed["requests"], unnamed["admitted"], unnamed["refused"]) == (1, 0, 1)
    assert "groups" not in (await replay_lines(lines, load_policy_set(policy_file))).as_json()


async def test_a_log_written_by_end_time_is_replayed_by_start_time_with_a_bounded_window(
    tmp_path: Path,
) -> None:
    """Lines arrive as exchanges end; a long one written after short ones that started
    later is still replayed first, and only a window of lines is held at a time."""
    base = 1_780_000_000.0
    # Written in end order: r1 (starts at +10, ends +11), r0 (starts +0, ends +100).
    lines = [logged(1, base + 10, 1, None), logged(0, base, 100, None)]
    policy_file = tmp_path / "one.yaml"
    policy_file.write_text(
        "version: 1\npolicies:\n  - name: c\n    scope: account\n    limits: {requests: 9/day}\n"
    )
    _, decisions = await replay_decisions(lines, load_policy_set(policy_file))
    assert [request for request, _ in decisions] == ["r0", "r1"]

    read = 0

    def lines_of_a_long_log() -> Iterator[dict[str, object]]:
        nonlocal read
        for i in range(2000):  # an hour apart, with a 600 s window
            read += 1
            yield logged(i % 4, base + i * 3600, 1, None)

    tally = Tally()
    held = []
    for replayed, _ in enumerate(in_start_order(lines_of_a_long_log(), tally, window=600), 1):
        held.append(read - replayed)  # lines read but not yet replayed
    assert len(held) == 2000 and tally.late == 0
    assert max(held) <= 1  # memory holds the window, not the log


def test_the_replay_command_prints_groups_and_refuses_a_bad_by(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    log.write_text(
        "\n".join(json.dumps(logged(i, 1_780_000_000.0 + i, 1, "t")) for i in range(3)) + "\n"
    )
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "version: 1\npolicies:\n  - name: p\n    scope: account\n    limits: {requests: 9/day}\n"
    )
    args = ["replay", str(log), "--policies", str(policy_file)]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--json", "--by", "attribute:tier"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["groups"]["t"]["requests"] == 3
    table = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--by", "attribute:tier"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "by tier:" in table.stdout and "\n  t " in table.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--by", "tier"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "attribute:NAME" in bad.stdout


async def test_a_capping_policy_in_replay_counts_shaped_exchanges(tmp_path: Path) -> None:
    """Each line reserved 10 + 100 tokens, one second apart; the first two ran live (8 + 30
    used), the last two were refused live (offered, and settled at, their reservation).
    Of a 150-token day: the first two fit whole (38 each settled), the third asks 110 of
    74 left and is shaped to 64 output tokens, the fourth would get 26, below the 50
    minimum: refused."""
    base = 1_780_000_000.0
    lines = [logged(i * 2, base + i, 1, "t") for i in range(4)]  # one account: a0
    policy_file = tmp_path / "cap.yaml"
    policy_file.write_text(
        "version: 1\npolicies:\n  - name: cap\n    scope: account\n    action: cap\n"
        "    min_output_tokens: 50\n    limits: {tokens: 150/day}\n"
    )
    tally, decisions = await replay_decisions(lines, load_policy_set(policy_file), by="tier")
    group = tally.as_json()["groups"]["t"]
    assert [admitted for _, admitted in decisions] == [True, True, True, False]
    assert (group["admitted"], group["shaped"], group["refused"]) == (3, 1, 1)
    assert group["output_tokens_admitted"] == 30 + 30 + 64  # the shaped one: its cap
    assert group["output_tokens_offered"] == 30 + 30 + 100 + 100
