"""What ``gateway admin`` prints for people: one aligned table or a few lines per command."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + "Z"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _limits(limits: dict[str, list[str]]) -> str:
    return ", ".join(f"{metric}={'+'.join(values)}" for metric, values in limits.items())


def _overrides(items: Sequence[dict[str, Any]]) -> str:
    if not items:
        return "No overrides are set."
    rows = [
        (o["scope"], o["id"], _limits(o["limits"]), when(o["expires_at"]), o["set_by"], o["reason"])
        for o in items
    ]
    return table(("SCOPE", "ID", "LIMITS", "EXPIRES", "BY", "REASON"), rows)


def _usage(body: dict[str, Any]) -> str:
    rows = [
        (
            r["policy"],
            r["metric"],
            r["limit"],
            r["used"],
            r["remaining"],
            r["reset_seconds"],
            r["source"],
        )
        for r in body["limits"]
    ]
    head = f"{body['scope']} {body['id']} (policy set {body['policy_version']})"
    if not rows:
        return f"{head}: no policy of this scope applies."
    header = ("POLICY", "METRIC", "LIMIT", "USED", "REMAINING", "RESET_S", "SOURCE")
    return head + "\n" + table(header, rows)


def _cluster(body: dict[str, Any]) -> str:
    lines = [f"cluster {body['id']}: {body['size']} members: {', '.join(body['members'])}"]
    spend = [
        (s["policy"], s["metric"], s["limit"], s["used"], s["remaining"]) for s in body["spend"]
    ]
    if spend:
        lines.append(table(("POLICY", "METRIC", "LIMIT", "USED", "REMAINING"), spend))
    return "\n".join(lines)


def _account(body: dict[str, Any]) -> str:
    org = body["organization"] or "unknown (not seen by this replica)"
    cluster = body["cluster"]
    if cluster and body["linked"]:
        where = f"cluster {cluster['id']} ({cluster['size']} accounts)"
    elif body["clusters_available"]:
        where = "linked to no other account"
    else:
        where = "clusters not available on this gateway"
    return f"account {body['account']}: organization {org}; {where}"


def _policies(body: dict[str, Any]) -> str:
    lines = [
        f"version {body['version']}, loaded {when(body['loaded_at'])} from "
        + (", ".join(body["sources"]) or "code")
    ]
    last = body.get("last_reload")
    if last:
        lines.append(f"last reload check {when(last['checked_at'])}: {last['outcome']}")
        lines += [f"  {p}" for p in last["problems"]]
    rows = [(p["name"], p["scope"], p["mode"]) for p in body["policies"]]
    return "\n".join([*lines, table(("POLICY", "SCOPE", "MODE"), rows)])


def _audit(body: dict[str, Any]) -> str:
    rows = [
        (when(e["time"]), e["actor"], e.get("replica", ""), e["action"], e["target"], e["reason"])
        for e in body["entries"]
    ]
    header = ("TIME", "BY", "REPLICA", "ACTION", "TARGET", "REASON")
    return table(header, rows) if rows else "No entries."


def _warnings(body: dict[str, Any]) -> list[str]:
    return [f"warning: {text}" for text in body.get("warnings", [])]


def render(args: argparse.Namespace, body: Any) -> str:
    cmd = args.admin_command
    if cmd == "usage":
        return _usage(body)
    if cmd == "override":
        if args.override_command == "list":
            return _overrides(body["overrides"])
        if args.override_command == "set":
            return "Set:\n" + _overrides([body["override"]])
        return f"Cleared the override on {args.scope} {args.id}."
    if cmd in ("link", "unlink"):
        after = body["cluster"]
        accounts = "1 account" if after["size"] == 1 else f"{after['size']} accounts"
        state = f"in cluster {after['id']} ({accounts})"
        if after["id"] == body["account"]:
            state = "linked to no other account"
        return "\n".join([f"account {body['account']}: {state}", *_warnings(body)])
    if cmd == "cluster":
        return _cluster(body)
    if cmd == "account":
        return _account(body)
    if cmd == "policies":
        return _policies(body)
    if cmd == "reload":
        return f"{body['outcome']}: version {body['version']} (was {body['previous_version']})"
    return _audit(body)
