"""Scenario runs: what they measure against which baseline, seeds and their spread, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.simulation.command import add_simulate_parser, chosen_scenarios, run_simulate
from gateway.simulation.scenarios import SCENARIOS
from gateway.simulation.tally import SimTally

SMALL = ["--scale", "0.0004", "--legit-orgs", "5", "--days", "1", "--json"]


def policy(account_limit: str, cluster_rule: bool) -> str:
    """An account limit, and perhaps a 20k/day output budget for multi-organization clusters."""
    rule = (
        "  - {name: ring, scope: cluster, min_organizations: 3, limits: {output_tokens: 20k/day}}\n"
    )
    return (
        "version: 1\npolicies:\n"
        f"  - {{name: own, scope: account, limits: {{requests: {account_limit}}}}}\n"
        + (rule if cluster_rule else "")
        + "clusters:\n  link_by:\n    - header: x-device-id\n"
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


def simulate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert run_simulate(parse(argv)) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def only_run(result: dict[str, Any]) -> dict[str, Any]:
    (scenario,) = result["scenarios"]
    (run,) = scenario["runs"]
    assert isinstance(run, dict)
    return run


def test_refusals_by_own_limits_alone_are_not_counted_against_cluster_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "own.yaml"
    path.write_text(policy("3/hour", cluster_rule=False))
    run = only_run(simulate([*SMALL, "--scenario", "lab", "--policies", str(path)], capsys))
    found = run["metrics"]
    assert found["customer_refused_own_limits_alone"] > 0  # bursts of 4 meet 3/hour
    assert found["customer_refused"] == found["customer_refused_own_limits_alone"]
    assert found["customer_refused_extra"] == 0
    assert found["customer_output_kept"] == 1
    assert found["background_refused_extra"] == 0
    assert found["campaign_output_admitted"] is None


def test_a_cluster_rule_is_measured_beyond_the_same_customers_own_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(policy("60/hour", cluster_rule=True))
    run = only_run(simulate([*SMALL, "--scenario", "lab", "--policies", str(path)], capsys))
    with_rules, alone = run["with_policies"]["customer"], run["own_limits_alone"]["customer"]
    assert (
        with_rules["requests"]
        == alone["requests"]
        == run["timing"]["baseline_events"] - (run["own_limits_alone"]["legit"]["requests"])
    )
    found = run["metrics"]
    extra = (with_rules["refused"] - alone["refused"]) / with_rules["requests"]
    assert found["customer_refused_extra"] == pytest.approx(extra)
    assert found["customer_refused_extra"] > 0.5  # 40 students on 4 devices: a "ring"
    kept = with_rules["output_tokens_admitted"] / alone["output_tokens_admitted"]
    assert found["customer_output_kept"] == pytest.approx(kept)
    assert found["customer_output_kept"] < 0.5
    assert found["background_refused_extra"] == 0  # one organization per card and device


def test_a_campaign_scenario_measures_the_campaign_output_admitted() -> None:
    tally, baseline = SimTally(days=1), SimTally(days=1)
    tally.campaign.output_offered, tally.campaign.output_admitted = 1000, 15
    tally.legit.requests = baseline.legit.requests = 200
    tally.legit.admitted, baseline.legit.admitted = 190, 198
    tally.legit.output_admitted, baseline.legit.output_admitted = 900, 1000
    from gateway.simulation.report import metrics

    found = metrics(SCENARIOS["pairs"], tally, baseline)
    assert found["campaign_output_admitted"] == 0.015
    assert found["background_refused_extra"] == pytest.approx(8 / 200)
    assert found["background_output_kept"] == pytest.approx(0.9)
    assert found["customer_refused_extra"] is found["customer_output_kept"] is None


def test_several_seeds_give_one_run_each_and_their_spread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*SMALL, "--scenario", "pairs,ci-farm", "--seeds", "0,1,2"]
    result = simulate(argv, capsys)
    assert [s["name"] for s in result["scenarios"]] == ["pairs", "ci-farm"]
    for scenario in result["scenarios"]:
        assert [run["seed"] for run in scenario["runs"]] == [0, 1, 2]
    pairs, farm = result["scenarios"]
    values = [run["metrics"]["campaign_output_admitted"] for run in pairs["runs"]]
    spread = pairs["spread"]["campaign_output_admitted"]
    assert spread["min"] == min(values) and spread["max"] == max(values)
    assert spread["mean"] == pytest.approx(sum(values) / 3)
    assert len(set(values)) > 1  # the seeds really differ
    assert farm["spread"]["campaign_output_admitted"] is None
    assert [run["metrics"]["customer_refused_extra"] for run in farm["runs"]] == [0.0] * 3

    # The same seeds again: the same results, run by run.
    again = simulate(argv, capsys)
    for first, second in zip(result["scenarios"], again["scenarios"], strict=True):
        assert [r["metrics"] for r in first["runs"]] == [r["metrics"] for r in second["runs"]]
        assert [r["with_policies"] for r in first["runs"]] == [
            r["with_policies"] for r in second["runs"]
        ]


def test_the_table_has_a_row_per_run_and_a_mean_per_scenario(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a for a in SMALL if a != "--json"] + ["--scenario", "lab", "--seeds", "4,5"]
    assert run_simulate(parse(argv)) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    lab = [row[:2] for row in rows if row and row[0] == "lab"]
    assert lab == [["lab", "4"], ["lab", "5"], ["lab", "mean"]]


def test_scenario_choice_all_defaults_and_card_groups() -> None:
    assert [s.name for s in chosen_scenarios(parse([]))] == ["tuned"]
    assert [s.name for s in chosen_scenarios(parse(["--scenario", "all"]))] == list(SCENARIOS)
    two = chosen_scenarios(parse(["--scenario", "tuned", "--scenario", "pairs,tuned"]))
    assert [s.name for s in two] == ["tuned", "pairs"]
    hundred = chosen_scenarios(
        parse(["--scenario", "tuned,pairs", "--accounts-per-instrument", "100"])
    )
    assert [s.campaign.per_card for s in hundred if s.campaign] == [100, 2]
    assert parse(["--seed", "7"]).seeds == [7]
    with pytest.raises(SystemExit):
        parse(["--scenario", "nonesuch"])
    with pytest.raises(SystemExit):
        parse(["--seeds", "1,x"])


def test_a_log_is_one_run(tmp_path: Path) -> None:
    argv = [*SMALL, "--seeds", "0,1", "--log", str(tmp_path / "log.jsonl")]
    with pytest.raises(ConfigError, match="one scenario and one seed"):
        run_simulate(parse(argv))


def test_help_describes_every_scenario_in_one_line() -> None:
    parser = argparse.ArgumentParser()
    text = add_simulate_parser(parser.add_subparsers(dest="command")).format_help()
    for scenario in SCENARIOS.values():
        (line,) = [x for x in text.splitlines() if x.split()[:1] == [scenario.name]]
        assert scenario.summary in line
