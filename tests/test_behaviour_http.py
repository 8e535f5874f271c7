"""Behaviour through the real HTTP path: a script that asks for the largest cap steadily,
for long answers, is shaped once it has shown it; a person beside it is not."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.behaviour import MIN_REQUESTS
from gateway.mock_upstream import MockConfig, create_mock_app
from gateway.policy.loader import load_policy_set
from gateway.settings import Settings
from tests.budget.helpers import NOON, Clock
from tests.servers import running

POLICIES = """
version: 1
policies:
  - name: per-account
    scope: account
    limits: {output_tokens: 2M/day}
  - name: suspect-behaviour
    scope: cluster
    match: {cluster_behaviour: suspect}
    action: cap
    min_output_tokens: 256
    limits: {output_tokens: 3000/day}
clusters:
  link_by:
    - header: x-device-id
"""


def body(max_tokens: int) -> dict[str, object]:
    return {
        "model": "claude-test",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Explain everything, at length."}],
    }


async def test_a_script_is_shaped_once_it_has_shown_its_habits(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(POLICIES))
    clock = Clock(NOON)
    rng = random.Random(0)
    mock = create_mock_app(MockConfig(output_tokens=2_000, token_delay_s=0))
    async with running(mock) as upstream:
        app = create_app(Settings(upstream=upstream), policies=load_policy_set(path), clock=clock)
        async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            script = {"x-account-id": "bot-1", "x-device-id": "dev-bot"}
            person = {"x-account-id": "alice", "x-device-id": "dev-alice"}
            outputs, capped, statuses = [], [], []
            shaped: list[tuple[int, int, int]] = []  # (day, output, cap sent upstream)
            for _ in range(40):
                clock.advance(rng.expovariate(1 / 3375))
                answer = await client.post("/v1/messages", json=body(16_384), headers=script)
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    output = answer.json()["usage"]["output_tokens"]
                    outputs.append(output)
                    cap = answer.headers.get("x-gateway-output-capped")
                    capped.append(cap is not None)
                    if cap is not None:
                        shaped.append((int(clock.now // 86_400), output, int(cap)))
                # The person: a session of three short turns, 20 s apart.
                for _ in range(3):
                    clock.advance(20)
                    turn = await client.post("/v1/messages", json=body(300), headers=person)
                    assert turn.status_code == 200
                    assert "x-gateway-output-capped" not in turn.headers
    # Unknown at first: answered in full while the evidence gathers.
    first = MIN_REQUESTS - 1
    assert outputs[:first] == [2_000] * first
    assert not any(capped[:first])
    # Then suspect: the upstream was sent a lower cap (its answers stop there), and once
    # the day's 3,000 output tokens are spent, the rest of the day is refused.
    assert shaped and all(256 <= cap < 16_384 and o <= cap for _, o, cap in shaped)
    for day in {d for d, _, _ in shaped}:
        assert sum(o for d, o, _ in shaped if d == day) <= 3_000
    assert statuses.count(429) >= 10
