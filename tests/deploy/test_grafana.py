"""deploy/grafana: the dashboard is one Grafana can import, its every query is PromQL that
promtool accepts, and every metric it names is one a real gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import ROOT, metric_names, run, tool

DASHBOARD = ROOT / "deploy" / "grafana" / "model-gateway.json"
# Grafana fills these in before Prometheus sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL as Prometheus receives it) for every query on the dashboard."""
    found = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def test_the_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels():
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, f"{panel['title']} is wider than the grid"
        # No data source is hard-wired: the importer picks one.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for variable in re.findall(r"\$(\w+)", DASHBOARD.read_text()):
        assert variable in variables or variable.startswith("__"), f"${variable} is not defined"


def test_promtool_accepts_every_query(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rules: each query becomes a recording rule.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run(tool("promtool"), "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_the_dashboard_names_only_metrics_the_gateway_exports(exported: frozenset[str]) -> None:
    seen: set[str] = set()
    for title, expr in queries():
        named = metric_names(expr)
        assert named, f"{title}: no metric in {expr!r}"
        assert named <= exported, f"{title} names {sorted(named - exported)}, not exported"
        seen |= named
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert metric is not None and metric.group(1) in exported, variable["definition"]
    # The on-call's questions: is the store up, is the policy set stale, who is refused.
    assert {"gateway_storage_up", "gateway_policy_reload_failed", "gateway_refusals_total"} <= seen
