"""One scenario and seed replayed in parts, on every core, and the parts' tallies added up.

The run under the policies is split into parts of whole linked components
(partition.py), twice as many as workers so that a slow part is not the last one left;
the baseline (own limits alone, the campaign left out) into as many as workers. Each part
draws the population's days itself and keeps its own accounts' exchanges, so a part
holds one day of events and its own accounts' counters and links, whatever the scale.
With ``--log``, each part writes its lines to a file of its own, merged by time at the end.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.progress import Progress
from gateway.simulation.population import Population, build
from gateway.simulation.scenarios import Scenario
from gateway.simulation.tally import SimTally
from gateway.workers import Report, run_tasks


@dataclass(frozen=True, slots=True)
class Run:
    """One scenario and seed as the command asked for it."""

    scenario: Scenario
    seed: int
    scale: float
    days: int
    legit_orgs: int | None
    campaign_accounts: int | None
    policies: str  # a policy file or folder, checked already
    without_clusters: bool
    log: str | None = None

    def population(self) -> Population:
        return build(
            self.seed,
            scenario=self.scenario,
            scale=self.scale,
            days=self.days,
            legit_orgs=self.legit_orgs,
            campaign_accounts=self.campaign_accounts,
        )


@dataclass(frozen=True, slots=True)
class Part:
    run: Run
    baseline: bool  # own limits alone, without the campaign
    index: int
    count: int

    @property
    def log(self) -> str | None:
        if self.run.log is None or self.baseline:
            return None
        return self.run.log if self.count == 1 else f"{self.run.log}.part{self.index}"


@dataclass(frozen=True, slots=True)
class Done:
    tally: SimTally
    exchanges: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Outcome:
    tally: SimTally
    baseline: SimTally  # the run itself when it had own limits alone
    timing: dict[str, Any]


def replay_part(part: Part, report: Report) -> Done:
    """Replay one part (in a worker process); progress as (day, exchanges) now and then."""
    from gateway.policy.loader import load_policy_set
    from gateway.replay import cluster_policies_dropped
    from gateway.simulation.partition import account_rates, components, parts
    from gateway.simulation.run import simulate

    run = part.run
    population = run.population()
    policies = load_policy_set(run.policies)
    keep = None
    if part.count > 1:
        found = components(population, policies)
        keep = parts(found, account_rates(population), part.count) == part.index
    if part.baseline or run.without_clusters:
        policies = cluster_policies_dropped(policies)
    if part.baseline:
        population = population.without_campaign()
    started = time.perf_counter()
    tally = asyncio.run(simulate(population, policies, part.log, keep, report))
    exchanges = sum(count.requests for count in tally.groups.values())
    return Done(tally, exchanges, time.perf_counter() - started)


def replay_run(run: Run, workers: int, progress: Progress | None) -> Outcome:
    """The run under its policies and its baseline, split over ``workers`` processes."""
    started = time.perf_counter()
    population = run.population()
    split = workers > 1
    count = 2 * workers if split else 1
    tasks = [Part(run, False, i, count) for i in range(count)]
    if not run.without_clusters:
        count = workers if split else 1
        tasks += [Part(run, True, i, count) for i in range(count)]
    expected = population.expected_events()
    if not run.without_clusters:
        expected += population.without_campaign().expected_events()
    shown = _Shown(run, len(tasks), expected, progress)
    done = run_tasks(replay_part, tasks, workers, shown)
    main = [d for d, t in zip(done, tasks, strict=True) if not t.baseline]
    alone = [d for d, t in zip(done, tasks, strict=True) if t.baseline]
    tally = _added(main, run)
    baseline = _added(alone, run) if alone else tally
    if run.log is not None and split:
        _merge_logs(run.log, [t.log for t in tasks if t.log is not None])
    wall = time.perf_counter() - started
    events = sum(d.exchanges for d in main)
    alone_events = sum(d.exchanges for d in alone)
    timing = {
        "events": events,
        "baseline_events": alone_events,
        "workers": max(1, workers),
        "parts": len(tasks),
        "wall_s": round(wall, 2),
        "events_per_s": round((events + alone_events) / max(wall, 1e-9)),
        "replay_s": round(sum(d.seconds for d in main), 2),
        "baseline_s": round(sum(d.seconds for d in alone), 2),
    }
    return Outcome(tally, baseline, timing)


def _added(done: list[Done], run: Run) -> SimTally:
    total = SimTally(run.days)
    for part in done:
        total.merge(part.tally)
    return total


class _Shown:
    """Progress from every part: the slowest part's simulated day, exchanges so far."""

    def __init__(self, run: Run, parts: int, expected: float, progress: Progress | None):
        self.run, self.expected, self.progress = run, expected, progress
        self.days = [0] * parts
        self.counts = [0] * parts

    def __call__(self, index: int, message: Any) -> None:
        self.days[index], self.counts[index] = message
        if self.progress is None:
            return
        count = sum(self.counts)
        where = f"{self.run.scenario.name}, seed {self.run.seed}: day {min(self.days)}"
        self.progress.show(f"{where}/{self.run.days}", count, count / max(1.0, self.expected))


def _merge_logs(path: str, parts: list[str]) -> None:
    """The parts' lines, each part in time order, merged by time into ``path``."""
    handles = [Path(part).open(encoding="utf-8") for part in parts]  # noqa: SIM115
    try:
        with Path(path).open("w", encoding="utf-8") as out:
            out.writelines(heapq.merge(*handles, key=_line_time))
    finally:
        for handle in handles:
            handle.close()
    for part in parts:
        Path(part).unlink()


def _line_time(line: str) -> float:
    # A simulated line starts with its time: {"time":1776816001.328,...
    return float(line[8 : line.index(",", 8)])
