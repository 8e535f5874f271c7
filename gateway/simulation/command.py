"""The ``gateway simulate`` subcommand: build each scenario's population per seed, replay it
with the policies and with own limits alone, print what it did."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.progress import Progress
from gateway.simulation.campaign import DAYS
from gateway.simulation.scenarios import (
    CARD_GROUPED,
    SCENARIOS,
    Scenario,
    scenario_help,
    with_accounts_per_card,
)
from gateway.workers import cores

if TYPE_CHECKING:
    from gateway.simulation.tally import SimTally

DEFAULT_POLICIES = "policies/distillation-defense.yaml"
_SHARING = {"1": 1, "2": 2, "10": 10, "50": 50, "100": 100, "all": None}


def _scenario_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name != "all" and name not in SCENARIOS:
            known = ", ".join(SCENARIOS)
            raise argparse.ArgumentTypeError(f"no scenario {name!r}; known: {known}, all")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of seeds"
        ) from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are whole numbers from 0")
    return list(dict.fromkeys(seeds))


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay synthetic legitimate traffic and distillation campaigns",
        description="Replay a synthetic population (legitimate organizations, and a "
        "scenario's campaign or customers) through the budget engine, per scenario and seed; "
        "docs/distillation.md explains it.",
        epilog=scenario_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="a policy file or folder")
    parser.add_argument(
        "--scenario",
        action="append",
        type=_scenario_names,
        metavar="NAME",
        help="a scenario below, several (repeated or comma-separated), or all (default tuned)",
    )
    parser.add_argument(
        "--without-clusters",
        action="store_true",
        help="drop cluster-scope policies (per-account and per-organization limits only)",
    )
    parser.add_argument(
        "--accounts-per-instrument",
        choices=list(_SHARING),
        help=f"campaign accounts per payment card in {', '.join(CARD_GROUPED)} "
        "(default 10); other scenarios keep their own",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.01,
        help="multiplies the number of campaign accounts (25,000) and background "
        "organizations (5,000); rates, token sizes, days and customer shapes stay "
        "(default 0.01)",
    )
    parser.add_argument("--days", type=int, default=DAYS, help=f"days simulated (default {DAYS})")
    parser.add_argument(
        "--legit-orgs", type=int, help="background organizations (overrides --scale for them)"
    )
    parser.add_argument(
        "--campaign-accounts", type=int, help="campaign accounts (overrides --scale for them)"
    )
    parser.add_argument(
        "--seeds",
        "--seed",
        dest="seeds",
        type=_seeds,
        default=[0],
        metavar="N[,N...]",
        help="random seeds, comma-separated: each scenario runs once per seed (default 0)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=cores(),
        metavar="N",
        help="processes replaying parts of the population (linked accounts stay together; "
        f"the result is the same as with 1); default the cores here ({cores()})",
    )
    parser.add_argument("--log", metavar="PATH", help="also write the decision log here")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw admitted tokens per day (first seed)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def chosen_scenarios(args: argparse.Namespace) -> list[Scenario]:
    names = [name for group in args.scenario or [["tuned"]] for name in group]
    if "all" in names:
        names = list(SCENARIOS)
    chosen = [SCENARIOS[name] for name in dict.fromkeys(names)]
    if args.accounts_per_instrument is not None:
        per_card = _SHARING[args.accounts_per_instrument]
        chosen = [with_accounts_per_card(s, per_card) for s in chosen]
    return chosen


def run_simulate(args: argparse.Namespace) -> int:
    from gateway.policy.loader import load_policy_set

    if args.scale <= 0 or args.days < 1:
        raise ConfigError("--scale must be above 0 and --days at least 1.")
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1.")
    scenarios = chosen_scenarios(args)
    if args.log and len(scenarios) * len(args.seeds) > 1:
        raise ConfigError("--log writes one run's decisions: give one scenario and one seed.")
    plot = _plotter() if args.plot else None
    load_policy_set(args.policies)  # checked here, once, before any worker starts
    started = time.perf_counter()
    results, panels = [], []
    progress = Progress.for_terminal(args.json)
    for scenario in scenarios:
        runs = []
        for seed in args.seeds:
            run, tally = _run(args, scenario, seed, progress)
            runs.append(run)
            if seed == args.seeds[0]:
                panels.append((scenario.name, tally))
        results.append(_scenario_result(scenario, runs))
    if progress is not None:
        progress.done()
    result = {
        "policies": args.policies,
        "cluster_policies": not args.without_clusters,
        "accounts_per_instrument": args.accounts_per_instrument,
        "scale": args.scale,
        "days": args.days,
        "legit_orgs": args.legit_orgs,
        "campaign_accounts": args.campaign_accounts,
        "seeds": args.seeds,
        "scenarios": results,
        "timing": {"total_s": round(time.perf_counter() - started, 2)},
    }
    if plot is not None:
        clusters = "per-account limits only" if args.without_clusters else "with cluster budgets"
        title = f"{args.policies}, {clusters}; scale {args.scale}, seed {args.seeds[0]}"
        plot(panels, args.plot, title)
    from gateway.simulation.report import render

    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


def _plotter() -> Any:
    try:
        from gateway.simulation.plot import plot_days
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'model-gateway[plot]'.") from None
    return plot_days


def _run(
    args: argparse.Namespace, scenario: Scenario, seed: int, progress: Progress | None
) -> tuple[dict[str, Any], SimTally]:
    """One scenario, one seed: with the policies, and own limits alone (report.py)."""
    # numpy is imported here, not at the top: every other subcommand starts without it.
    from gateway.simulation.parallel import Run, replay_run
    from gateway.simulation.report import metrics

    run = Run(
        scenario,
        seed,
        args.scale,
        args.days,
        args.legit_orgs,
        args.campaign_accounts,
        args.policies,
        args.without_clusters,
        args.log,
    )
    outcome = replay_run(run, args.workers, progress)
    own = outcome.baseline.as_json()
    found = {
        "seed": seed,
        "population": run.population().counts(),
        "metrics": metrics(scenario, outcome.tally, outcome.baseline),
        "with_policies": outcome.tally.as_json(),
        "own_limits_alone": {"legit": own["legit"], "customer": own["customer"]},
        "timing": outcome.timing,
    }
    return found, outcome.tally


def _scenario_result(scenario: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from gateway.simulation.report import spread

    return {
        "name": scenario.name,
        "kind": scenario.kind,
        "summary": scenario.summary,
        "runs": runs,
        "spread": spread(runs),
    }
