"""deploy/kubernetes: kubernetes-validate (strict: unknown fields are errors) accepts every
manifest, and the workload is wired as docs/deploy.md says: the gateway in front of the model
server in one pod, policies from the ConfigMap, the admin token from a Secret, probes on the
admin listener, only the proxy port behind the Service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import BIN, ROOT, run, tool

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.37.0"


def resources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def container(name: str) -> dict[str, Any]:
    spec = resources()["Deployment/model-api"]["spec"]["template"]["spec"]
    by_name = {each["name"]: each for each in spec["containers"]}
    return by_name[name]


def env(name: str) -> dict[str, dict[str, Any]]:
    return {each["name"]: each for each in container(name)["env"]}


def validate(*paths: Path) -> tuple[int, str]:
    args = ["--strict", "--kubernetes-version", KUBERNETES_VERSION]
    done = run(tool("kubernetes-validate"), *args, *map(str, paths))
    return done.returncode, done.stdout + done.stderr


def test_kubernetes_validate_accepts_every_manifest() -> None:
    code, output = validate(*MANIFESTS)
    assert code == 0, output
    for name in resources():
        kind, resource = name.split("/")
        assert f"passed for resource {kind.lower()}/{resource} against version 1.37" in output


def test_kubernetes_validate_rejects_a_misspelt_field(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    text = (ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text()
    broken.write_text(text.replace("readinessProbe:", "readinesProbe:", 1))
    code, output = validate(broken)
    assert code != 0
    assert "readinesProbe" in output, output


def test_the_policies_in_the_configmap_pass_gateway_check(tmp_path: Path) -> None:
    data = resources()["ConfigMap/model-api-policies"]["data"]
    mount = {each["name"]: each for each in container("gateway")["volumeMounts"]}["policies"]
    path = env("gateway")["GATEWAY_POLICIES"]["value"]
    assert path == f"{mount['mountPath']}/policies.yaml" and "subPath" not in mount
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(data["policies.yaml"])
    done = run(str(BIN / "gateway"), "check", str(policy_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": ok," in done.stdout


def test_every_gateway_setting_is_one_gateway_serve_knows() -> None:
    done = run(str(BIN / "gateway"), "serve", "--help")
    known = set(re.findall(r"GATEWAY_[A-Z_]+", done.stdout)) | {"GATEWAY_ADMIN_TOKEN"}
    settings = set(env("gateway"))
    assert settings - known == set(), f"not settings of gateway serve: {settings - known}"
    assert {"GATEWAY_UPSTREAM", "GATEWAY_POLICIES", "GATEWAY_ADMIN_TOKEN"} <= settings


def test_the_admin_token_comes_from_a_secret_and_no_secret_is_shipped() -> None:
    token = env("gateway")["GATEWAY_ADMIN_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert not [kind for kind in resources() if kind.startswith("Secret/")]


def test_probes_ask_the_admin_listener() -> None:
    gateway = container("gateway")
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    assert ports == {"proxy": 8080, "admin": 8081}
    assert str(ports["admin"]) == env("gateway")["GATEWAY_ADMIN_PORT"]["value"]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}


def test_the_gateway_fronts_the_model_server_on_loopback() -> None:
    upstream = env("gateway")["GATEWAY_UPSTREAM"]["value"]
    assert upstream == "http://127.0.0.1:9000"
    server = container("model-server")
    assert "ports" not in server
    assert server["command"][-4:] == ["--host", "127.0.0.1", "--port", "9000"]


def test_only_the_proxy_port_is_behind_a_cluster_ip() -> None:
    services = {name: spec for name, spec in resources().items() if name.startswith("Service/")}
    proxied = [
        port["targetPort"]
        for service in services.values()
        if service["spec"].get("clusterIP") != "None"
        for port in service["spec"]["ports"]
    ]
    assert proxied == ["proxy"]
    # The admin port's only Service is headless (DNS for Prometheus), and the network policy
    # lets only Prometheus reach it.
    policy = resources()["NetworkPolicy/model-api"]["spec"]["ingress"]
    admin_rules = [rule for rule in policy if rule["ports"][0]["port"] == "admin"]
    assert len(admin_rules) == 1
    assert (
        admin_rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        == "prometheus"
    )


def test_every_container_requests_resources() -> None:
    spec = resources()["Deployment/model-api"]["spec"]["template"]["spec"]
    for each in spec["containers"]:
        assert {"cpu", "memory"} <= set(each["resources"]["requests"]), each["name"]
        assert "memory" in each["resources"]["limits"], each["name"]
