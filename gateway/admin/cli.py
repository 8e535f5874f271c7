"""``gateway admin``: the admin API from a shell. Tables for people, ``--json`` for scripts.

Exit codes: 0 done; 1 the gateway refused (bad input, not found, bad token, a failed check);
2 a usage error or no answer from the gateway. The token comes from GATEWAY_ADMIN_TOKEN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any
from urllib.parse import quote

import httpx

from gateway.admin.tables import render

DEFAULT_URL = "http://127.0.0.1:8081"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Bad command-line input: exit 2."""


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h``, ``2d`` → seconds."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or float(found[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90s, 30m, 6h, 2d")
    return float(found[1]) * _SECONDS[found[2]]


def _common() -> argparse.ArgumentParser:
    """--url and --json, accepted before the command and after it. SUPPRESS keeps a command's
    parser from resetting what was given before it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the admin listener (default env GATEWAY_ADMIN_URL, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the API's JSON"
    )
    return common


def add_admin_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``admin`` and its commands to the ``gateway`` command's subparsers."""
    common = _common()
    admin: argparse.ArgumentParser = subparsers.add_parser(
        "admin",
        help="operate a running gateway via its admin API",
        description="Operate a running gateway through its admin API. The token comes from "
        "GATEWAY_ADMIN_TOKEN, the URL from --url or GATEWAY_ADMIN_URL.",
        parents=[common],
    )
    cmds = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=text, description=text[0].upper() + text[1:] + ".", parents=[common]
        )
        return parser

    def scope_id(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("scope", help="account, organization or cluster")
        parser.add_argument("id", help="the account, organization or cluster id")

    def reason(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--reason", default="", help="why, for the audit")

    scope_id(command(cmds, "usage", "every limit of a scope id and what is left"))
    override = command(cmds, "override", "set, list or clear live overrides")
    ocmds = override.add_subparsers(dest="override_command", required=True, metavar="ACTION")
    oset = command(ocmds, "set", "replace limits on some metrics for one scope id")
    scope_id(oset)
    oset.add_argument("limits", nargs="+", metavar="METRIC=LIMIT", help="e.g. tokens=5M/day")
    oset.add_argument("--ttl", type=duration, help="ends by itself after e.g. 6h")
    reason(oset)
    command(ocmds, "list", "active overrides")
    oclear = command(ocmds, "clear", "remove an override")
    scope_id(oclear)
    reason(oclear)
    link = command(cmds, "link", "link an account to a cluster")
    link.add_argument("cluster", help="a cluster id, or a new name for a cluster")
    link.add_argument("account", help="the account to link")
    reason(link)
    unlink = command(cmds, "unlink", "unlink an account from its cluster")
    unlink.add_argument("account", help="the account to unlink")
    reason(unlink)
    command(cmds, "cluster", "a cluster's members and spend").add_argument(
        "id", help="a cluster id (an absorbed name answers for its survivor)"
    )
    command(cmds, "account", "an account's organization and cluster").add_argument(
        "id", help="an account id"
    )
    command(cmds, "policies", "the running policy set")
    command(cmds, "reload", "reload the policy files now")
    audit = command(cmds, "audit", "the latest admin actions")
    audit.add_argument(
        "--limit", type=int, default=20, help="how many entries, newest first (default 20)"
    )
    return admin


def run_admin(args: argparse.Namespace) -> int:
    # Both are SUPPRESSed when not given (see _common): fill them in once, here.
    args.url = getattr(args, "url", None) or os.environ.get("GATEWAY_ADMIN_URL") or DEFAULT_URL
    args.json = getattr(args, "json", False)
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        print(f"gateway admin: {exc}", file=sys.stderr)
        return 2


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


def _override_body(args: argparse.Namespace) -> dict[str, Any]:
    limits: dict[str, list[str]] = {}
    for item in args.limits:
        metric, eq, limit = item.partition("=")
        if not eq or not metric or not limit:
            raise UsageError(f"{item!r} is not METRIC=LIMIT, e.g. tokens=5M/day.")
        limits.setdefault(metric.strip(), []).append(limit.strip())
    body: dict[str, Any] = {"limits": limits, "reason": args.reason}
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl
    return body


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    """The command as (method, path, JSON body, query)."""
    cmd = args.admin_command
    reason = {"reason": args.reason} if getattr(args, "reason", "") else {}
    if cmd == "usage":
        return "GET", _path("v1", "usage", args.scope, args.id), None, {}
    if cmd == "override":
        sub = args.override_command
        if sub == "list":
            return "GET", "/v1/overrides", None, {}
        path = _path("v1", "overrides", args.scope, args.id)
        if sub == "set":
            return "PUT", path, _override_body(args), {}
        return "DELETE", path, None, reason
    if cmd == "link":
        return "PUT", _path("v1", "clusters", args.cluster, "members", args.account), None, reason
    if cmd == "cluster":
        return "GET", _path("v1", "clusters", args.id), None, {}
    if cmd == "account":
        return "GET", _path("v1", "accounts", args.id), None, {}
    if cmd == "policies":
        return "GET", "/v1/policies", None, {}
    if cmd == "reload":
        return "POST", "/v1/policies/reload", None, {}
    if cmd == "audit":
        return "GET", "/v1/audit", None, {"limit": str(args.limit)}
    raise UsageError(f"unknown command {cmd!r}")


async def _run(args: argparse.Namespace) -> int:
    token = os.environ.get("GATEWAY_ADMIN_TOKEN", "")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=10.0) as client:
        try:
            if args.admin_command == "unlink":
                # The route names the cluster; the command needs only the account.
                found = await _call(client, "GET", _path("v1", "accounts", args.account))
                if found[0] != 200:
                    return _fail(found[1], args)
                cluster = found[1].get("cluster")
                if not cluster or not found[1].get("linked"):
                    print(f"gateway admin: {args.account} is in no cluster.", file=sys.stderr)
                    return 1
                path = _path("v1", "clusters", cluster["id"], "members", args.account)
                query = {"reason": args.reason} if args.reason else {}
                status, body = await _call(client, "DELETE", path, query=query)
            else:
                method, path, payload, query = _request(args)
                status, body = await _call(client, method, path, payload, query)
        except httpx.HTTPError as exc:
            print(f"gateway admin: no answer from {args.url}: {exc}", file=sys.stderr)
            return 2
    if status >= 400:
        return _fail(body, args)
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(render(args, body))
    return 0


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, Any]:
    response = await client.request(method, path, json=payload, params=query or None)
    try:
        return response.status_code, response.json()
    except ValueError:
        error = {"message": f"HTTP {response.status_code} with a body that is not JSON."}
        return response.status_code, {"error": error}


def _fail(body: Any, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(body, indent=2))
    error = body.get("error", {}) if isinstance(body, dict) else {}
    print(f"gateway admin: {error.get('message', 'the gateway refused.')}", file=sys.stderr)
    for line in error.get("problems", []):
        print(line, file=sys.stderr)
    return 1
