"""The simulation's tally, and ``simulate`` end to end at a tiny scale."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.identity import hash_value
from gateway.policy.loader import load_policy_set
from gateway.replay_command import add_replay_parser, run_replay
from gateway.simulation.command import add_simulate_parser, run_simulate
from gateway.simulation.run import tally_lines

START = 1_780_012_800.0  # a UTC midnight
CARD = "header:x-payment-fingerprint"
POLICY = """\
version: 1
policies:
  - name: account-hourly
    scope: account
    limits: {requests: 2/hour}
  - name: cluster-daily
    scope: cluster
    limits: {requests: 3/day}
clusters:
  link_by:
    - header: x-payment-fingerprint
"""


def line(n: int, account: str, card: str) -> dict[str, Any]:
    return {
        "time": START + 60 * n,
        "duration_s": 1.0,
        "request_id": f"r{n}",
        "outcome": "complete",
        "model": "m",
        "reserved": {"input_tokens": 10, "output_tokens": 100},
        "usage": {"input_tokens": 10, "output_tokens": 40},
        "account": account,
        "organization": None,
        "attributes": {},
        "signals": [[CARD, hash_value(CARD, card)]],
        "decision": "admitted",
    }


async def test_legit_refusals_split_into_own_limits_and_cluster_only(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    lines = [
        line(0, "acct-1", "card-A"),  # admitted (cluster 1/3)
        line(1, "acct-2", "card-A"),  # admitted (cluster 2/3)
        line(2, "acct-1", "card-A"),  # admitted (cluster 3/3)
        line(3, "acct-2", "card-A"),  # cluster full, acct-2 has room: cluster only
        line(4, "acct-1", "card-A"),  # cluster full binds (day), but acct-1 is full too: own
        line(5, "acct-9", "card-B"),  # alone: admitted
        line(6, "acct-9", "card-B"),  # admitted
        line(7, "acct-9", "card-B"),  # its own hourly limit: own
        line(8, "camp-1", "card-C"),  # campaign: admitted, 40 output tokens
    ]
    tally = await tally_lines(lines, load_policy_set(policy), days=1, start=START)
    assert tally.legit.requests == 8
    assert (tally.legit.refused_own, tally.legit.refused_cluster) == (2, 1)
    assert tally.campaign.requests == tally.campaign.admitted == 1
    assert tally.campaign.output_admitted == tally.campaign.output_offered == 40
    assert tally.as_json()["legit"]["refused_cluster_share"] == pytest.approx(1 / 8)


def parse(add: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_simulate_runs_end_to_end_and_its_log_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, plot = tmp_path / "log.jsonl", tmp_path / "plot.png"
    argv = ["simulate", "--scale", "0.0004", "--days", "2", "--seed", "7", "--json"]
    argv += ["--accounts-per-instrument", "all", "--log", str(log), "--plot", str(plot)]
    assert run_simulate(parse(add_simulate_parser, argv)) == 0
    run = only_run(json.loads(capsys.readouterr().out))
    campaign, legit = run["with_policies"]["campaign"], run["with_policies"]["legit"]
    assert campaign["requests"] > 0 and legit["requests"] > 0
    assert 0 <= campaign["output_tokens_admitted_share"] <= 1
    assert run["timing"]["events"] == campaign["requests"] + legit["requests"]
    assert plot.stat().st_size > 0

    # The log it wrote, replayed under the same policies, decides alike.
    argv = ["replay", str(log), "--policies", "policies/distillation-defense.yaml", "--json"]
    assert run_replay(parse(add_replay_parser, argv)) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["exchanges"] == run["timing"]["events"]
    assert replayed["newly_refused"] == replayed["newly_admitted"] == 0

    # The same seed gives the same result; dropping cluster rules refuses no more.
    again = ["simulate", "--scale", "0.0004", "--days", "2", "--seed", "7", "--json"]
    again += ["--accounts-per-instrument", "all"]
    assert run_simulate(parse(add_simulate_parser, again)) == 0
    assert only_run(json.loads(capsys.readouterr().out))["with_policies"]["campaign"] == campaign
    assert run_simulate(parse(add_simulate_parser, [*again, "--without-clusters"])) == 0
    loose = only_run(json.loads(capsys.readouterr().out))["with_policies"]
    assert loose["campaign"]["requests_admitted"] >= campaign["requests_admitted"]
    assert loose["legit"]["refused_cluster_only"] == 0


def only_run(result: dict[str, Any]) -> dict[str, Any]:
    (scenario,) = result["scenarios"]
    (run,) = scenario["runs"]
    assert isinstance(run, dict)
    return run


def test_the_shipped_defense_contains_pairs_and_spares_a_lab(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Small, so it runs in CI: 50 campaign accounts in pairs, a lab of 40 students on
    4 shared devices, 30 background organizations, 4 days (docs/distillation.md has the
    full table). Pairs are 2 organizations on a card: no link rule tells them from a
    couple sharing a card; their behaviour does."""
    argv = ["simulate", "--scenario", "pairs,lab", "--scale", "0.002", "--legit-orgs", "30"]
    argv += ["--days", "4", "--seed", "3", "--json"]
    assert run_simulate(parse(add_simulate_parser, argv)) == 0
    result = json.loads(capsys.readouterr().out)
    pairs, lab = (scenario["runs"][0]["metrics"] for scenario in result["scenarios"])
    # Own limits alone admit all of it; here the first day, before a pair has shown 20
    # requests, is most of what gets through (a quarter of the run's days).
    assert pairs["campaign_output_admitted"] < 0.20
    assert pairs["campaign_contained_day"] <= 2
    assert lab["customer_output_kept"] >= 0.95
    assert pairs["background_refused_extra"] == lab["background_refused_extra"] == 0


def test_a_run_split_over_workers_tallies_exactly_what_one_process_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Linked accounts stay in one part, so parts share no budget: 2 workers (4 parts and
    2 for the baseline) count the same as 1, for a campaign and for customers."""
    argv = ["simulate", "--scenario", "chains,agencies", "--scale", "0.002", "--legit-orgs"]
    argv += ["40", "--days", "3", "--seed", "5", "--json", "--policies"]
    argv += ["policies/distillation-defense.yaml"]
    results = []
    for workers in ("1", "2"):
        assert run_simulate(parse(add_simulate_parser, [*argv, "--workers", workers])) == 0
        result = json.loads(capsys.readouterr().out)
        for scenario in result["scenarios"]:
            for run in scenario["runs"]:
                assert run["timing"]["workers"] == int(workers)
                del run["timing"]
        del result["timing"]
        results.append(result)
    assert results[0] == results[1]
    assert results[0]["scenarios"][0]["runs"][0]["with_policies"]["campaign"]["requests"] > 0
