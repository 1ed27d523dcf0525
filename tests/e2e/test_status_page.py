"""The status page through nginx, rendered in a real headless Chromium (selenium + chromedriver)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from devstack.stack import Stack
from testing.sync import install_connected_account, seed_contacts, start_sync, wait_run

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # A real browser, not a skip: selenium is a dev dependency and .ci/run installs chromium.
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_status_page_needs_admin_credentials(stack: Stack, isolated_env: dict[str, str]) -> None:
    url = f"{stack.gateway_url}/status"
    anonymous = requests.get(url, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(url, auth=("admin", "wrong"), timeout=10).status_code == 401
    # The token never travels in the URL (URLs end up in logs).
    assert (
        requests.get(url, params={"token": isolated_env["ADMIN_TOKEN"]}, timeout=10).status_code
        == 401
    )
    bearer = requests.get(
        url, headers={"Authorization": f"Bearer {isolated_env['ADMIN_TOKEN']}"}, timeout=10
    )
    assert bearer.status_code == 200 and bearer.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in bearer.headers["Content-Security-Policy"]


@pytest.mark.browser
def test_status_page_renders_accounts_runs_and_queues_in_chromium(
    stack: Stack, isolated_env: dict[str, str], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    from shared.db import get_database

    env = isolated_env
    account = install_connected_account(stack, env)
    seed_contacts(stack, account.account_id, 3)
    run = wait_run(stack, env, start_sync(stack, env, account.name)["run_id"])
    assert run["status"] == "done"
    db = get_database()
    # A per-address import error whose text is hostile HTML, and some events for the chart.
    db.execute(
        "INSERT INTO list_members (account_id, email, state, error_code, error_message) "
        "VALUES (%s, %s, 'failed', 'role_address', %s)",
        (account.account_id, "info@status.example", HOSTILE),
    )
    minute = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    db.execute(
        "INSERT INTO event_minutes (account_id, minute, events) VALUES (%s, %s, 42) "
        "ON DUPLICATE KEY UPDATE events = events + 42",
        (account.account_id, minute),
    )

    credentials = base64.b64encode(f"admin:{env['ADMIN_TOKEN']}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credentials}"}}
    )
    browser.get(f"{stack.gateway_url}/status")

    assert browser.title == "amosync status"
    accounts = browser.find_element(By.ID, "accounts").text
    assert account.name in accounts and str(account.account_id) in accounts and "active" in accounts
    assert "(in " in accounts  # token expiry shown as time left
    runs = browser.find_element(By.ID, "runs")
    row = next(
        r for r in runs.find_elements(By.TAG_NAME, "tr") if r.text.startswith(str(run["run_id"]))
    )
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == [account.name, "full", "done"] and cells[6:8] == ["3", "3"]
    queues = browser.find_element(By.ID, "queues")
    tubes = {
        r.find_elements(By.TAG_NAME, "td")[0].text: [
            c.text for c in r.find_elements(By.TAG_NAME, "td")[1:]
        ]
        for r in queues.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert set(tubes) == {"token-refresh", "contact-events", "full-sync"}
    assert all(v.isdigit() for values in tubes.values() for v in values)
    assert int(tubes["full-sync"][4]) >= 1  # the stack's full-sync consumer watches its tube
    errors = browser.find_element(By.ID, "import-errors").text
    assert "info@status.example" in errors and HOSTILE in errors  # shown as text, not run
    assert browser.find_elements(By.CSS_SELECTOR, "#import-errors script, #import-errors img") == []
    chart = browser.find_element(By.ID, "events-chart")
    assert chart.tag_name == "svg" and len(chart.find_elements(By.TAG_NAME, "rect")) == 60
    # event_minutes is shared by every test of the session (and the stack's consumers): the
    # chart is checked against what it shows, and our minute against what we added.
    bars = {
        title.split(" UTC: ")[0]: int(title.rsplit(": ", 1)[1])
        for title in (
            r.find_element(By.TAG_NAME, "title").get_attribute("textContent")
            for r in chart.find_elements(By.TAG_NAME, "rect")
        )
    }
    assert bars[f"{minute:%H:%M}"] >= 42
    peak = max(bars.values())
    assert f"peak {peak}" in browser.find_element(
        By.CSS_SELECTOR, "#events-chart > title"
    ).get_attribute("textContent")
    assert f"peak {peak}/min" in chart.text
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.title != "pwned"
