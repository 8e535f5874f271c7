"""A decision log written by a live gateway, replayed under the same policies, decides alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gateway.admission import Admission
from gateway.app import create_app
from gateway.decision_log import DecisionLog, read_log
from gateway.metering import UsageRecord
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.replay import exchange_from_line, replay_lines
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

    tally, decisions = await replay_lines(lines, load_policy_set(policy_file))

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
    tally, decisions = await replay_lines(lines, load_policy_set(policy_file))
    assert [admitted for _, admitted in decisions] == [True, True, False, False, False]
    assert tally.skipped == 1
    assert tally.newly_refused == 3
    assert tally.as_json()["policies"] == {
        "two": {"requests": 3, "tokens": 120, "accounts": 1, "clusters": 1}
    }


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
