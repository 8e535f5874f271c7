"""The ``gateway simulate`` subcommand: build a population, replay it, print what it did."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from gateway.replay import cluster_policies_dropped
from gateway.simulation.campaign import DAYS

if TYPE_CHECKING:
    from gateway.simulation.run import SimTally

DEFAULT_POLICIES = "policies/distillation-defense.yaml"
_SHARING = {"1": 1, "10": 10, "100": 100, "all": None}


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay synthetic legitimate traffic and a distillation campaign",
        description="Replay a synthetic population (legitimate organizations and a "
        "distillation campaign) through the budget engine; docs/distillation.md explains it.",
    )
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="a policy file or folder")
    parser.add_argument(
        "--without-clusters",
        action="store_true",
        help="drop cluster-scope policies (per-account and per-organization limits only)",
    )
    parser.add_argument(
        "--accounts-per-instrument",
        choices=sorted(_SHARING),
        default="10",
        help="campaign accounts sharing one payment instrument (default 10)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.01,
        help="multiplies the number of campaign accounts (25,000) and legitimate "
        "organizations (5,000); rates, token sizes and days stay (default 0.01)",
    )
    parser.add_argument("--days", type=int, default=DAYS, help=f"days simulated (default {DAYS})")
    parser.add_argument(
        "--legit-orgs", type=int, help="legitimate organizations (overrides --scale for them)"
    )
    parser.add_argument(
        "--campaign-accounts", type=int, help="campaign accounts (overrides --scale for them)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--log", metavar="PATH", help="also write the decision log here")
    parser.add_argument("--plot", metavar="FILE.png", help="draw admitted tokens per day")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    # numpy is imported here, not at the top: every other subcommand starts without it.
    from gateway.errors import ConfigError
    from gateway.policy.loader import load_policy_set
    from gateway.simulation.population import build
    from gateway.simulation.run import simulate

    if args.scale <= 0 or args.days < 1:
        raise ConfigError("--scale must be above 0 and --days at least 1.")
    policies = load_policy_set(args.policies)
    if args.without_clusters:
        policies = cluster_policies_dropped(policies)
    started = time.perf_counter()
    population = build(
        args.seed,
        scale=args.scale,
        days=args.days,
        accounts_per_instrument=_SHARING[args.accounts_per_instrument],
        legit_orgs=args.legit_orgs,
        campaign_accounts=args.campaign_accounts,
    )
    built = time.perf_counter() - started
    tally, replayed = asyncio.run(simulate(population, policies, args.log))
    campaign = population.accounts.campaign
    counts = {
        "legit_organizations": len(population.org_volume),
        "legit_accounts": int((~campaign).sum()),
        "campaign_accounts": int(campaign.sum()),
    }
    result = _result(args, tally, counts, len(population.events), built, replayed)
    if args.plot:
        try:
            from gateway.simulation.plot import plot_days
        except ImportError:
            raise ConfigError(
                "--plot needs matplotlib: pip install 'model-gateway[plot]'."
            ) from None

        clusters = "per-account limits only" if args.without_clusters else "with cluster budgets"
        title = (
            f"{args.policies}, {clusters}; {args.accounts_per_instrument} accounts per "
            f"instrument; scale {args.scale}, seed {args.seed}"
        )
        plot_days(tally, args.plot, title)
    print(json.dumps(result, indent=2) if args.json else _render(result))
    return 0


def _result(
    args: argparse.Namespace,
    tally: SimTally,
    counts: dict[str, int],
    events: int,
    built: float,
    replayed: float,
) -> dict[str, Any]:
    return {
        "policies": args.policies,
        "cluster_policies": not args.without_clusters,
        "accounts_per_instrument": args.accounts_per_instrument,
        "scale": args.scale,
        "days": args.days,
        "seed": args.seed,
        "population": counts,
        **tally.as_json(),
        "timing": {
            "events": events,
            "build_s": round(built, 2),
            "replay_s": round(replayed, 2),
            "events_per_s": round(events / max(replayed, 1e-9)),
        },
    }


def _render(result: dict[str, Any]) -> str:
    campaign, legit, timing = result["campaign"], result["legit"], result["timing"]
    mode = "with cluster budgets" if result["cluster_policies"] else "per-account limits only"
    return "\n".join(
        [
            f"{result['policies']} ({mode}); {result['accounts_per_instrument']} campaign "
            f"accounts per payment instrument; scale {result['scale']}, {result['days']} days, "
            f"seed {result['seed']}",
            f"campaign: {campaign['output_tokens_admitted']:,} of "
            f"{campaign['output_tokens_offered']:,} output tokens admitted "
            f"({campaign['output_tokens_admitted_share']:.2%}); "
            f"{campaign['requests_admitted']:,} of {campaign['requests']:,} requests",
            f"legitimate: {legit['requests']:,} requests; refused by their own limits "
            f"{legit['refused_own_limits']:,} ({legit['refused_own_share']:.3%}), "
            f"only by cluster rules {legit['refused_cluster_only']:,} "
            f"({legit['refused_cluster_share']:.3%}); shadow cluster rules would refuse "
            f"{legit['shadow_cluster_would_refuse']:,} more",
            f"{timing['events']:,} exchanges replayed in {timing['replay_s']} s "
            f"({timing['events_per_s']:,}/s; population built in {timing['build_s']} s)",
        ]
    )
