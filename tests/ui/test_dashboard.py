"""The ops dashboard in a real browser: Debian's chromium driven by Playwright, against a real
``gateway serve`` (memory://) in front of ``gateway mock-upstream``, both on free ports.

A person opens /ui/, types the admin token, and must see the running policy version, the
top account, the refusals of the last hour, the shadow policy's would-be refusals and the
audit entry of an override made a moment before; the page then follows a change by itself.
With ``UI_SCREENSHOTS=docs`` the screenshots go to docs/ (the ones docs/admin.md shows).

The browser never downloads anything (``playwright install`` is never called): a missing
chromium or Playwright fails this test with the sentence that says how to install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port
from tests.test_metrics import answers, wait_for

TOKEN = "ui-test-token-4f1c"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BIN = Path(sys.executable).parent
DOCS = Path(__file__).parents[2] / "docs"
POLICIES = """\
version: 1
policies:
  - name: account-daily
    scope: account
    limits:
      requests: 3/day
      tokens: 100k/day
  - name: org-daily
    scope: organization
    limits:
      tokens: 1M/day
  - name: trial-shadow
    scope: account
    mode: shadow
    limits:
      requests: 1/day
"""
SHADOW_REFUSALS = 2  # acct-heavy's 2nd and 3rd requests, over trial-shadow's 1/day
INSTALL = (
    "The dashboard's browser test needs Playwright (pip install -e '.[dev]') and Debian's "
    "chromium at /usr/bin/chromium (apt-get install -y chromium); ./scripts/test installs "
    "both. Playwright's own browser downloads are never used."
)


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(INSTALL, pytrace=False)
    return path


@dataclass
class Served:
    proxy: httpx.Client
    admin: httpx.Client
    admin_url: str

    def send(self, account: str, organization: str) -> int:
        headers = {"x-account-id": account, "x-organization-id": organization}
        body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        return self.proxy.post("/v1/messages", json=body, headers=headers).status_code


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("ui")
    (root / "policies.yaml").write_text(POLICIES)
    env = {**os.environ, "GATEWAY_ADMIN_TOKEN": TOKEN}
    env.pop("GATEWAY_ADMIN_TOKENS_FILE", None)
    mock_port, port, admin_port = free_port(), free_port(), free_port()
    commands = [
        ["mock-upstream", "--port", str(mock_port), "--token-delay", "0"],
        [
            *("serve", "--upstream", f"http://127.0.0.1:{mock_port}"),
            *("--policies", str(root / "policies.yaml"), "--replica-name", "replica-ui"),
            *("--port", str(port), "--admin-port", str(admin_port)),
        ],
    ]
    processes: list[subprocess.Popen[bytes]] = []
    for i, args in enumerate(commands):
        with (root / f"{i}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(BIN / "gateway"), *args], stdout=log, stderr=subprocess.STDOUT, env=env
                )
            )
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{mock_port}/mock/stats"), 30, "the mock")
        wait_for(lambda: answers(f"{admin_url}/readyz"), 30, f"the gateway (logs in {root})")
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy,
            httpx.Client(base_url=admin_url, timeout=10) as admin,
        ):
            yield Served(proxy, admin, admin_url)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(INSTALL, pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


def shoot(page: Any, name: str, tmp_path: Path) -> None:
    folder = DOCS if os.environ.get("UI_SCREENSHOTS") == "docs" else tmp_path
    page.screenshot(path=str(folder / name), full_page=True)


def test_a_person_with_the_token_sees_the_live_state(
    served: Served, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    statuses = [served.send("acct-heavy", "org-blue") for _ in range(5)]
    statuses += [served.send("acct-light", "org-green")]
    assert statuses == [200, 200, 200, 429, 429, 200]  # 3/day: two refusals
    override = {"limits": {"tokens": "5M/day"}, "ttl_seconds": 3600, "reason": "incident 42"}
    put = served.admin.put("/v1/overrides/account/acct-light", json=override, headers=AUTH)
    assert put.status_code == 200, put.text
    version = served.admin.get("/v1/policies", headers=AUTH).json()["version"]

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{served.admin_url}/ui/")
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.locator("#dashboard")).to_be_hidden()
    shoot(page, "ui-sign-in.png", tmp_path)

    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Open the dashboard").click()
    expect(page.get_by_role("alert")).to_contain_text("The admin token is not valid")
    expect(page.locator("#dashboard")).to_be_hidden()

    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Open the dashboard").click()
    policies = page.locator("#policies")
    expect(policies).to_contain_text(version)
    expect(policies).to_contain_text("account-daily (account, enforce)")
    expect(page.locator("#storage")).to_contain_text("up")
    overrides = page.locator("#overrides")
    expect(overrides).to_contain_text("account acct-light")
    expect(overrides).to_contain_text("incident 42")
    expect(overrides).to_contain_text(" left")
    spenders = page.locator("#spenders")
    first_account = spenders.locator("table").first.locator("tbody tr").first
    expect(first_account).to_contain_text("acct-heavy")
    expect(first_account).to_contain_text("0 of 3/day")  # its tightest day limit: requests
    expect(spenders.locator("table").nth(1)).to_contain_text("org-blue")
    expect(page.locator("#refusals .legend")).to_contain_text("account-daily (rate_limit): 2")
    expect(page.locator("#refusals svg rect[fill]").first).to_be_attached()
    expect(page.locator("#shadow")).to_contain_text("trial-shadow")
    trial = page.locator("#shadow tbody tr").filter(has_text="trial-shadow").first
    expect(trial.locator("td").nth(2)).to_have_text(str(SHADOW_REFUSALS))
    audit = page.locator("#audit tbody tr").first
    expect(audit).to_contain_text("override.set")
    expect(audit).to_contain_text("account/acct-light")
    expect(audit).to_contain_text("replica-ui")
    shoot(page, "ui-dashboard.png", tmp_path)

    # It follows the gateway by itself: a change made elsewhere shows without a reload.
    cleared = served.admin.delete("/v1/overrides/account/acct-light?reason=over", headers=AUTH)
    assert cleared.status_code == 200
    expect(page.locator("#audit tbody tr").first).to_contain_text("override.clear", timeout=15_000)
    expect(overrides).to_contain_text("No live override.")

    # The token stays in this tab's session storage and never in an address.
    assert page.evaluate("sessionStorage.getItem('gateway-admin-token')") == TOKEN
    assert all(TOKEN not in url for url in requested), requested
    context.close()


def test_signing_out_forgets_the_token(served: Served, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(f"{served.admin_url}/ui/")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Open the dashboard").click()
    expect(page.locator("#dashboard")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('gateway-admin-token')") is None
    page.reload()
    expect(page.locator("#dashboard")).to_be_hidden()
    page.close()
