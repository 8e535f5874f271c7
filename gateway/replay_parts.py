"""``gateway replay`` on every core: a decision log split by linked component.

Accounts can only share a counter through what a line says they share: an organization,
a link signal the policies link by, or a link in the policy file. A first pass reads the
log (a stretch of it per worker) and joins those, union-find over the ids it meets, so
its memory grows with the distinct accounts, organizations and signal values, not with
the lines. The components are dealt to parts by lines, the largest first, each to the
lightest part. In the second pass each worker reads the whole log and replays its part's
lines only, in start order, as a single replay would (a line's account is found without
parsing the line; only its own lines are parsed). The parts' tallies add up to the tally
of one replay, save for lines more than the reorder window out of order (``late``),
which each part places among its own lines only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.log_fields import account_of, parse_line
from gateway.policy.model import PolicySet
from gateway.progress import Progress
from gateway.replay import Tally, replay_lines
from gateway.workers import Report, run_tasks

ORGANIZATION = "o"
SIGNAL = "s"
ACCOUNT = "a"
REPORT_EVERY = 50_000  # lines between two progress reports


@dataclass(frozen=True, slots=True)
class Stretch:
    """Pass 1: the lines starting in bytes [start, end) of a log."""

    path: str
    start: int
    end: int
    signals: frozenset[str]  # link signal names the policies link by


@dataclass(slots=True)
class Links:
    """Pass 1's finding: which ids go together, and each account's lines."""

    parent: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def root(self, node: str) -> str:
        parent = self.parent
        while (up := parent.get(node, node)) != node:
            parent[node] = parent.get(up, up)  # path halving
            node = up
        return node

    def join(self, a: str, b: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def add(self, other: Links) -> None:
        for node, up in other.parent.items():
            self.join(node, up)
        for account, count in other.lines.items():
            self.lines[account] = self.lines.get(account, 0) + count


@dataclass(frozen=True, slots=True)
class Part:
    """Pass 2: replay the lines of the accounts in part ``index``."""

    path: str
    policies: str
    storage: str
    by: str | None
    index: int
    part_of: dict[str, int]  # account → part; an account not listed is part 0's


def split_replay(
    path: str,
    policies_path: str,
    policies: PolicySet,
    *,
    storage: str,
    by: str | None,
    workers: int,
    progress: Progress | None,
) -> Tally:
    """``replay_lines`` over the log at ``path``, split over ``workers`` processes."""
    size = Path(path).stat().st_size
    signals = frozenset(signal.name for signal in policies.clusters.link_by)
    cuts = [size * i // workers for i in range(workers + 1)]
    stretches = [Stretch(path, cuts[i], cuts[i + 1], signals) for i in range(workers)]
    shown = _Shown(progress, "linking", size)
    links = Links()
    for found in run_tasks(find_links, stretches, workers, shown):
        links.add(found)
    for accounts in policies.clusters.links.values():
        for account in accounts[1:]:
            links.join(ACCOUNT + accounts[0], ACCOUNT + account)
    # One part per worker, so that each reads the log once more; dealt by lines, the
    # parts come out even unless one component outweighs the rest.
    count = workers
    part_of = deal(links, count)
    parts = [Part(path, policies_path, storage, by, i, part_of) for i in range(count)]
    shown = _Shown(progress, "replaying", size * count)
    tally = Tally(by=by)
    for done in run_tasks(replay_part, parts, workers, shown):
        add(tally, done)
    return tally


def find_links(stretch: Stretch, report: Report) -> Links:
    """Pass 1 over one stretch of the log."""
    links = Links()
    number = 0
    for number, (line, at) in enumerate(_lines(stretch.path, stretch.start, stretch.end), 1):
        if number % REPORT_EVERY == 0:
            report((at - stretch.start, number))
        found = parse_line(line)  # orjson, whole: faster than reading three fields
        account = found.get("account")
        if not isinstance(account, str):
            continue
        node = ACCOUNT + account
        links.lines[account] = links.lines.get(account, 0) + 1
        if organization := found.get("organization"):
            links.join(node, f"{ORGANIZATION}{organization}")
        try:
            for name, value in found.get("signals") or ():
                if name in stretch.signals:
                    links.join(node, f"{SIGNAL}{name}\0{value}")
        except (TypeError, ValueError):
            pass  # signals that are not pairs: a damaged line, which the replay pass skips
    report((stretch.end - stretch.start, number))
    return links


def deal(links: Links, count: int) -> dict[str, int]:
    """Each account's part: whole components, the largest first to the lightest part."""
    load: dict[str, int] = {}
    for account, lines in links.lines.items():
        root = links.root(ACCOUNT + account)
        load[root] = load.get(root, 0) + lines
    totals = [0] * count
    part_of_root = {}
    for root, lines in sorted(load.items(), key=lambda item: (-item[1], item[0])):
        lightest = min(range(count), key=totals.__getitem__)
        part_of_root[root] = lightest
        totals[lightest] += lines
    return {a: part_of_root[links.root(ACCOUNT + a)] for a in links.lines}


def replay_part(part: Part, report: Report) -> Tally:
    """Pass 2: the whole log read, this part's lines replayed."""
    from gateway.policy.loader import load_policy_set

    policies = load_policy_set(part.policies)
    own = _own_lines(part, report)
    return asyncio.run(replay_lines(own, policies, part.storage, by=part.by))


def _own_lines(part: Part, report: Report) -> Iterator[dict[str, Any]]:
    position = own = 0
    for number, (line, at) in enumerate(_lines(part.path, 0, None), 1):
        if number % REPORT_EVERY == 0:
            report((at, own))
        position = at
        account = account_of(line)
        mine = part.part_of.get(account, 0) if account is not None else 0
        if mine == part.index:
            own += 1
            yield parse_line(line)
    report((position, own))


def _lines(path: str, start: int, end: int | None) -> Iterator[tuple[bytes, int]]:
    """The lines that start in [start, end), undecoded, with the offset after each; blank
    ones left out. A stretch that starts mid-line begins at the next line (the previous stretch
    reads that one to its end)."""
    with Path(path).open("rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # the rest of the line that started before ``start``
        at = handle.tell()
        while end is None or at < end:
            raw = handle.readline()
            if not raw:
                return
            at += len(raw)
            if raw.strip():
                yield raw, at


def add(total: Tally, part: Tally) -> None:
    """Add a part's tally (other accounts, other clusters) to ``total``."""
    for name in ("exchanges", "skipped", "late", "admitted", "newly_refused", "newly_admitted"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    for mine, theirs in ((total.refused, part.refused), (total.shadow, part.shadow)):
        for policy, count in theirs.items():
            held = mine.setdefault(policy, type(count)())
            held.requests += count.requests
            held.tokens += count.tokens
            held.accounts |= count.accounts
            held.clusters |= count.clusters
    for value, group in part.groups.items():
        held_group = total.groups.setdefault(value, type(group)())
        for name in group.__slots__:
            setattr(held_group, name, getattr(held_group, name) + getattr(group, name))


class _Shown:
    """Progress of a pass: the share of the log its workers have read."""

    def __init__(self, progress: Progress | None, what: str, total: int) -> None:
        self.progress, self.what, self.total = progress, what, max(1, total)
        self.read: dict[int, int] = {}
        self.lines: dict[int, int] = {}

    def __call__(self, index: int, message: Any) -> None:
        at, lines = message
        self.read[index], self.lines[index] = at, lines
        if self.progress is not None:
            share = sum(self.read.values()) / self.total
            where = f"{self.what}, {share:.0%} of the log read"
            self.progress.show(where, sum(self.lines.values()), share)
