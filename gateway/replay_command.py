"""``gateway replay``, the command: read a decision log as a stream, replay it
(``gateway.replay``), print the tally as a table or JSON, and show progress on a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from gateway.budget.decision import Decision
from gateway.decision_log import iter_log
from gateway.errors import ConfigError
from gateway.progress import Progress
from gateway.replay import Exchange, Tally, replay_lines
from gateway.workers import cores


def render(tally: Tally) -> str:
    """The tally as a table a person reads."""
    data = tally.as_json()
    out = [
        f"exchanges {data['exchanges']}: admitted {data['admitted']}, refused {data['refused']} "
        f"(skipped {data['skipped']} lines without a subject or unreadable)",
        f"against the live run: {data['newly_refused']} newly refused, "
        f"{data['newly_admitted']} newly admitted",
    ]
    for title, table in (("refused", data["policies"]), ("shadow (would refuse)", data["shadow"])):
        out.append(f"{title}:")
        out.append(
            f"  {'policy':<32} {'requests':>10} {'tokens':>14} {'accounts':>9} {'clusters':>9}"
        )
        for name, row in table.items():
            out.append(
                f"  {name:<32} {row['requests']:>10,} {row['tokens']:>14,} "
                f"{row['accounts']:>9,} {row['clusters']:>9,}"
            )
        if not table:
            out.append("  (none)")
    if tally.by is not None:
        out.append(f"by {tally.by}:")
        out.append(
            f"  {'value':<20} {'requests':>10} {'admitted':>10} {'refused':>9} {'shaped':>8} "
            f"{'input offered':>14} {'admitted':>14} {'output offered':>15} {'admitted':>14}"
        )
        for value, group in data["groups"].items():
            out.append(
                f"  {value or '(none)':<20} {group['requests']:>10,} {group['admitted']:>10,} "
                f"{group['refused']:>9,} {group['shaped']:>8,} "
                f"{group['input_tokens_offered']:>14,} {group['input_tokens_admitted']:>14,} "
                f"{group['output_tokens_offered']:>15,} {group['output_tokens_admitted']:>14,}"
            )
    return "\n".join(out)


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="run a decision log through the engine under a policy set"
    )
    parser.add_argument("log", metavar="LOG", help="a decision log (one JSON line per exchange)")
    parser.add_argument("--policies", required=True, help="a policy file or folder")
    parser.add_argument("--storage", default="memory://", help="counter store URI")
    parser.add_argument("--json", action="store_true", help="print the tally as JSON")
    parser.add_argument(
        "--workers",
        type=int,
        default=cores(),
        metavar="N",
        help="processes, each replaying the lines of some linked components (the tally is "
        f"the same as with 1); memory:// only; default the cores here ({cores()})",
    )
    parser.add_argument(
        "--by",
        metavar="attribute:NAME",
        help='also count per value of this attribute (lines without it under "")',
    )
    return parser


def run_replay(args: argparse.Namespace) -> int:
    from gateway.policy.loader import load_policy_set

    by = None
    if args.by is not None:
        kind, _, name = args.by.partition(":")
        if kind != "attribute" or not name:
            print(f"--by {args.by!r}: write it as attribute:NAME, e.g. attribute:tier.")
            return 2
        by = name
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1.")
    policies = load_policy_set(args.policies)
    progress = Progress.for_terminal(args.json)
    if args.workers > 1 and args.storage in ("memory://", "memory:"):
        from gateway.replay_parts import split_replay

        tally = split_replay(
            args.log,
            args.policies,
            policies,
            storage=args.storage,
            by=by,
            workers=args.workers,
            progress=progress,
        )
    else:
        shown = _Shown(progress) if progress is not None else None
        tally = asyncio.run(
            replay_lines(iter_log(args.log), policies, args.storage, by=by, each=shown)
        )
    if progress is not None:
        progress.done()
    print(json.dumps(tally.as_json(), indent=2) if args.json else render(tally))
    return 0


class _Shown:
    """Progress of a replay in this process: the log's time reached."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.count = 0

    def __call__(self, exchange: Exchange, decision: Decision) -> None:
        self.count += 1
        if self.count % 1000:
            return
        at = datetime.fromtimestamp(exchange.time, UTC).strftime("%Y-%m-%d %H:%M")
        self.progress.show(f"log time {at}", self.count)
