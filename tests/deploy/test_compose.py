"""docker-compose.yml: both gateway ports on the host's loopback only (its policy set believes
identity headers from Docker's networks), a healthcheck on every service, and one policy set,
which passes the same check `gateway serve` applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.policy.loader import load_policy_set
from tests.deploy.tools import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def test_ports_are_published_on_loopback_only() -> None:
    published = [port for service in services().values() for port in service.get("ports", [])]
    assert published
    for port in published:
        assert port.startswith("127.0.0.1:"), f"{port} is open to every interface"


def test_every_service_has_a_healthcheck_and_the_gateway_waits_for_them() -> None:
    for name, service in services().items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    gateway = services()["gateway"]
    assert gateway["depends_on"] == {
        name: {"condition": "service_healthy"} for name in services() if name != "gateway"
    }
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])


def test_the_gateway_runs_one_policy_set_that_loads() -> None:
    gateway = services()["gateway"]
    source, target, _ = gateway["volumes"][0].split(":")
    path = gateway["environment"]["GATEWAY_POLICIES"]
    assert path.startswith(target + "/") and path.endswith(".yaml"), "one file, not a folder"
    policy_set = load_policy_set(ROOT / source / Path(path).relative_to(target))
    assert policy_set.policies
    # Containers reach the gateway from Docker's networks, so loopback alone would refuse all.
    assert len(policy_set.identity.trusted_sources) > 2
