"""The gateway command as a shell sees it: exit codes and the sentences on stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or {"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def test_serve_without_upstream_exits_with_one_sentence() -> None:
    result = gateway("serve", "--policies", "policies/default.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gateway: No upstream: set --upstream or GATEWAY_UPSTREAM to the model API's base URL, "
        "e.g. https://api.anthropic.com."
    )


def test_serve_without_policies_says_what_to_set() -> None:
    result = gateway("serve", "--upstream", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "No policies: set --policies or GATEWAY_POLICIES" in result.stderr


def test_serve_refuses_a_policy_file_that_fails_the_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicies:\n  - name: x\n    scope: account\n    limts: {}\n")
    result = gateway("serve", "--upstream", "http://127.0.0.1:1", "--policies", str(bad))
    assert result.returncode == 1
    assert f"{bad}:5:5: policies[0].limts: unknown key 'limts'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_exits_zero_on_the_shipped_policies_and_one_on_a_bad_file(tmp_path: Path) -> None:
    good = gateway("check", "policies/default.yaml")
    assert good.returncode == 0
    assert good.stdout.startswith("policies/default.yaml: ok, ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\npolicies: []\n")
    result = gateway("check", str(bad))
    assert result.returncode == 1
    assert str(bad) in result.stderr


def test_report_shadow_reads_the_storage_and_says_when_it_has_none(redis_url: str) -> None:
    import json
    import os

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = gateway("report", "shadow", "--storage", redis_url, "--json", env=env)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    missing = gateway("report", "shadow", env=env)
    assert missing.returncode == 2
    assert "No storage: set --storage or GATEWAY_STORAGE" in missing.stderr
