"""What a scenario run measures, against which baseline, and the table of every run.

The baseline of a run is the same population's background and customers replayed under the
same policy set without its cluster-scope policies: what their own (account and
organization) limits alone refuse and admit. The campaign is left out of it: it shares no
account, organization, card or device with them, so without cluster rules it cannot change
what they get.
"""

from __future__ import annotations

from typing import Any

from gateway.simulation.scenarios import Scenario
from gateway.simulation.tally import SimTally

# (key, column heading, decimals): the table's measured columns, in order.
COLUMNS = (
    ("campaign_output_admitted", "campaign output admitted", 2),
    ("campaign_contained_day", "contained from day", None),
    ("customer_refused_extra", "customers refused beyond own limits", 3),
    ("customer_output_kept", "customers' own-limit output kept", 2),
    ("background_refused_extra", "background refused beyond own limits", 3),
)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def metrics(scenario: Scenario, tally: SimTally, baseline: SimTally) -> dict[str, float | None]:
    """The run's measures; ``baseline`` is the run under own limits alone (module doc)."""
    campaign = tally.campaign
    found: dict[str, float | None] = {
        "campaign_output_admitted": (
            _share(campaign.output_admitted, campaign.output_offered)
            if scenario.campaign is not None
            else None
        )
    }
    found["campaign_contained_day"] = (
        contained_day(tally) if scenario.campaign is not None else None
    )
    for name, group in (("customer", "customer"), ("background", "legit")):
        run, alone = tally.groups[group], baseline.groups[group]
        # A scenario without customers has none to measure, not 0% of them refused.
        present = name == "background" or scenario.customer is not None
        found[f"{name}_refused"] = _share(run.refused, run.requests) if present else None
        found[f"{name}_refused_own_limits_alone"] = (
            _share(alone.refused, alone.requests) if present else None
        )
        found[f"{name}_refused_extra"] = (
            _share(run.refused - alone.refused, run.requests) if present else None
        )
        found[f"{name}_output_kept"] = (
            _share(run.output_admitted, alone.output_admitted) if present else None
        )
    return found


# A day counts as contained when the campaign got at most this share of the tokens it asked.
CONTAINED_SHARE = 0.05


def contained_day(tally: SimTally) -> float:
    """The first simulated day (1 = the campaign's first) from which every day admits the
    campaign at most CONTAINED_SHARE of the tokens it asked for; days + 1 if none does."""
    offered, admitted = tally.per_day["campaign_offered"], tally.per_day["campaign_admitted"]
    day = len(offered)
    while day > 0 and admitted[day - 1] <= CONTAINED_SHARE * offered[day - 1]:
        day -= 1
    return float(day + 1)


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Per measure, its mean, lowest and highest over the runs (seeds)."""
    found: dict[str, dict[str, float] | None] = {}
    for key in runs[0]["metrics"]:
        values = [v for run in runs if (v := run["metrics"][key]) is not None]
        found[key] = (
            {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
            if values
            else None
        )
    return found


def _percent(value: float | None, decimals: int | None) -> str:
    """A share in percent; a day number when ``decimals`` is None."""
    if value is None:
        return "—"
    return f"{value:.{decimals}%}" if decimals is not None else f"{value:.3g}"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def render(result: dict[str, Any]) -> str:
    mode = "with cluster budgets" if result["cluster_policies"] else "per-account limits only"
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"{result['policies']} ({mode}); scale {result['scale']}, {result['days']} days, "
        f"seeds {seeds}",
        "",
    ]
    rows = [["scenario", "seed", *(heading for _, heading, _ in COLUMNS)]]
    for scenario in result["scenarios"]:
        for run in scenario["runs"]:
            measured = [_percent(run["metrics"][key], d) for key, _, d in COLUMNS]
            rows.append([scenario["name"], str(run["seed"]), *measured])
        if len(scenario["runs"]) > 1:
            cells = []
            for key, _, decimals in COLUMNS:
                found = scenario["spread"][key]
                cells.append(
                    "—"
                    if found is None
                    else f"{_percent(found['mean'], decimals)} "
                    f"({_percent(found['min'], decimals)} to {_percent(found['max'], decimals)})"
                )
            rows.append([scenario["name"], "mean", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [_row(row, widths) for row in rows]
    lines.append("")
    for scenario in result["scenarios"]:
        lines += [_details(scenario["name"], run) for run in scenario["runs"]]
    lines.append(f"{result['timing']['total_s']} s in all")
    return "\n".join(lines)


def _details(name: str, run: dict[str, Any]) -> str:
    groups, alone, timing = run["with_policies"], run["own_limits_alone"], run["timing"]
    parts = []
    campaign = groups["campaign"]
    if campaign["requests"]:
        parts.append(
            f"campaign {campaign['output_tokens_admitted']:,} of "
            f"{campaign['output_tokens_offered']:,} output tokens admitted, "
            f"{campaign['requests_admitted']:,} of {campaign['requests']:,} requests"
        )
    for group, label in (("customer", "customers"), ("legit", "background")):
        count = groups[group]
        if count["requests"]:
            parts.append(
                f"{label} {count['requests']:,} requests, {count['refused']:,} refused "
                f"({alone[group]['refused']:,} by own limits alone; in this run "
                f"{count['refused_own_limits']:,} own, {count['refused_cluster_only']:,} "
                f"cluster only), shadow cluster rules would refuse "
                f"{count['shadow_cluster_would_refuse']:,} more"
            )
    parts.append(
        f"{timing['events']:,} exchanges + {timing['baseline_events']:,} for own limits "
        f"alone in {timing['wall_s']} s on {timing['workers']} worker(s), "
        f"{timing['events_per_s']:,}/s"
    )
    return f"{name}, seed {run['seed']}: " + "; ".join(parts)
