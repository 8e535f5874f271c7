"""deploy/prometheus: promtool accepts the alert rules and the scrape config, and every metric
they name is one a real gateway exports."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.tools import PROMETHEUS_OWN, ROOT, metric_names, run, tool

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_promtool_accepts_the_rules() -> None:
    done = run(tool("promtool"), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_accepts_the_scrape_config_and_the_rules_it_loads() -> None:
    done = run(tool("promtool"), "check", "config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid prometheus config file syntax" in done.stdout
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    broken.write_text(
        RULES.read_text().replace("gateway_storage_up == 0", "gateway_storage_up ==", 1)
    )
    done = run(tool("promtool"), "check", "rules", str(broken))
    assert done.returncode != 0
    assert '"GatewayStorageDown": could not parse expression' in done.stdout + done.stderr


def test_the_rules_name_only_metrics_the_gateway_exports(exported: frozenset[str]) -> None:
    for name, expr in alerts().items():
        named = metric_names(expr)
        assert named, f"{name}: no metric found in {expr!r}"
        unknown = named - exported - PROMETHEUS_OWN
        assert not unknown, f"{name} names {sorted(unknown)}, which /metrics does not export"


def test_each_condition_the_on_call_needs_has_an_alert() -> None:
    by_metric: dict[str, set[str]] = {}
    for name, expr in alerts().items():
        for metric in metric_names(expr):
            by_metric.setdefault(metric, set()).add(name)
    assert "GatewayStorageDown" in by_metric["gateway_storage_up"]
    assert "GatewayPolicyReloadFailing" in by_metric["gateway_policy_reload_failed"]
    assert "GatewayRefusalRateHigh" in by_metric["gateway_refusals_total"]
    assert "GatewayUpstreamFailuresHigh" in by_metric["gateway_upstream_failures_total"]
