"""The Dockerfile: hadolint accepts it, it has a HEALTHCHECK, every package it installs is
pinned (deploy/docker/constraints.txt, within pyproject.toml's ranges), and the image runs one
policy set."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.policy.loader import load_policy_set
from tests.deploy.tools import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "deploy" / "docker" / "constraints.txt"


def hadolint(path: Path) -> tuple[int, str]:
    done = run(tool("hadolint"), "--no-color", str(path))
    return done.returncode, done.stdout + done.stderr


def test_hadolint_accepts_the_dockerfile() -> None:
    code, output = hadolint(DOCKERFILE)
    assert code == 0, output
    assert output == "", output


def test_hadolint_rejects_an_unpinned_install(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text()
    broken.write_text(text.replace("-c constraints.txt setuptools", "setuptools", 1))
    code, output = hadolint(broken)
    assert code != 0
    assert "DL3013" in output, output


def test_the_image_has_a_healthcheck_on_readiness() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/readyz", text, re.MULTILINE), "no HEALTHCHECK"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line}: not pinned with =="
            found[canonicalize_name(name)] = version
    return found


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = pins()
    wanted = [Requirement(each) for each in project["project"]["dependencies"]]
    wanted += [Requirement(each) for each in project["build-system"]["requires"]]
    for requirement in wanted:
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} has no pin in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(version), f"{requirement.name}=={version}"


def test_every_install_uses_the_pins() -> None:
    installs = re.findall(r"pip install(?:[^\n\\]|\\\n)*", DOCKERFILE.read_text())
    assert len(installs) == 2
    for install in installs:
        assert "-c constraints.txt" in install, install


def test_the_image_runs_one_policy_set_that_loads() -> None:
    policies = re.search(r"GATEWAY_POLICIES=(\S+)", DOCKERFILE.read_text())
    assert policies is not None
    image_path = Path(policies.group(1))
    assert image_path.suffix == ".yaml", "a folder would load every shipped set at once"
    assert "COPY policies /etc/gateway/policies" in DOCKERFILE.read_text()
    assert load_policy_set(ROOT / "policies" / image_path.relative_to("/etc/gateway/policies"))


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = {source.rstrip("/") for line in copied for source in line.split()}
    assert sources == kept
