"""Token refresh end to end: enqueue → the stack's consumer → rotated pair → API calls work."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.stack import ROOT, SCHEDULER_COMMAND, Stack, venv_bin
from shared.db import get_database
from shared.jobqueue import get_queue
from shared.jobs import RefreshTokenJob
from testing.accounts import InstalledAccount, amo_control, install_account, stored_account
from testing.widget import wait_for

pytestmark = pytest.mark.e2e

AMOSYNC = str(Path(sys.executable).parent / "amosync")


def generation(account_id: int) -> int | None:
    row = stored_account(account_id)
    return None if row is None else row["generation"]


def contacts_work(stack: Stack, env: dict[str, str], account: InstalledAccount) -> bool:
    """An amoCRM API call made by a function container with the stored tokens."""
    resp = requests.get(
        f"{stack.gateway_url}/contacts",
        params={"name": account.name, "limit": 5},
        headers={"Authorization": f"Bearer {env['ADMIN_TOKEN']}"},
        timeout=20,
    )
    return resp.status_code == 200


def token_statuses_since(stack: Stack, since: float) -> list[int]:
    log = amo_control(stack, "GET", "/requests", params={"path_prefix": "/oauth2"})
    return [int(e["status"]) for e in log if e["at"] >= since]


@pytest.fixture
def short_tokens(stack: Stack) -> Iterator[int]:
    """Sandbox access tokens live 5 minutes while the test runs."""
    before = amo_control(stack, "GET", "/config")["token_ttl"]
    amo_control(stack, "POST", "/config", json={"token_ttl": 300})
    yield 300
    amo_control(stack, "POST", "/config", json={"token_ttl": before})


def test_short_lived_tokens_are_refreshed(
    stack: Stack, isolated_env: dict[str, str], short_tokens: int
) -> None:
    account = install_account(stack, isolated_env)
    assert generation(account.account_id) == 1
    # The scheduler's entry point, as operators run it (`update-tokens -t 1`).
    out = subprocess.run(
        [AMOSYNC, "update-tokens", "-t", "1"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "queued" in out.stdout
    wait_for(lambda: generation(account.account_id) == 2, what="the refresh consumer")
    row = get_database().fetch_one(
        "SELECT expires_at, refreshed_at FROM oauth_tokens WHERE account_id = %s",
        (account.account_id,),
    )
    assert row is not None and row["refreshed_at"] is not None
    assert contacts_work(stack, isolated_env, account)


def test_scheduler_enqueues_and_the_stacks_consumer_refreshes(
    stack: Stack, isolated_env: dict[str, str], short_tokens: int, tmp_path: Path
) -> None:
    """Issue 4's "done when": the scheduler process enqueues, the consumer refreshes."""
    account = install_account(stack, isolated_env)
    assert generation(account.account_id) == 1
    # Our own `python -m scheduler` in place of the stack's: it runs the token refresh when it
    # starts, in a one-minute slot of its own (the stack's scheduler claims hourly slots). Only
    # the scheduler lease holder schedules, so the stack's one steps aside first (a SIGTERM
    # releases its lease at once) and comes back afterwards.
    stack.stop_process("scheduler")
    env = {
        **stack.env,
        "TOKEN_REFRESH_INTERVAL_MINUTES": "1",
        "TOKEN_REFRESH_HORIZON_HOURS": "1",
    }
    log_path = tmp_path / "scheduler.log"
    with log_path.open("w") as log_file:
        scheduler = subprocess.Popen(
            venv_bin(SCHEDULER_COMMAND),
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: generation(account.account_id) == 2,
                timeout=30,
                what="the scheduler's refresh job and the stack's consumer",
            )
        finally:
            scheduler.terminate()
            scheduler.wait(15)
            stack.restart("scheduler")
    log = log_path.read_text()
    assert '"scheduled run done"' in log and '"job": "refresh-tokens"' in log, log[-2000:]
    row = stored_account(account.account_id)
    assert row is not None and row["status"] == "active"
    assert contacts_work(stack, isolated_env, account)


def test_racing_consumers_on_duplicate_jobs_leave_account_healthy(
    stack: Stack, isolated_env: dict[str, str]
) -> None:
    account = install_account(stack, isolated_env)
    since = time.time()
    names = [f"race-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    # Two more consumers beside the stack's own: three processes race for the jobs.
    extra = [
        subprocess.Popen(
            [AMOSYNC, "worker", "run", "token-refresh", "--name", name],
            cwd=ROOT,
            env=stack.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in names
    ]
    try:
        time.sleep(1.0)  # let them reach reserve()
        for _ in range(6):
            get_queue().put(RefreshTokenJob(account_id=account.account_id, reason="duplicate"))
        wait_for(lambda: generation(account.account_id) == 2, what="one refresh")

        def drained() -> bool:
            stats = get_queue().tube_stats("token-refresh")
            return stats["current-jobs-ready"] == 0 and stats["current-jobs-reserved"] == 0

        wait_for(drained, what="the duplicate jobs to be consumed")
    finally:
        for proc in extra:
            proc.terminate()
        for proc in extra:
            proc.wait(15)
        for name in names:
            get_database().execute("DELETE FROM workers WHERE name = %s", (name,))
    assert generation(account.account_id) == 2
    row = stored_account(account.account_id)
    assert row is not None and row["status"] == "active"
    assert all(status == 200 for status in token_statuses_since(stack, since))
    assert contacts_work(stack, isolated_env, account)


def test_revoked_refresh_token_marks_only_that_account(
    stack: Stack, isolated_env: dict[str, str]
) -> None:
    broken = install_account(stack, isolated_env)
    healthy = install_account(stack, isolated_env)
    amo_control(stack, "POST", f"/accounts/{broken.account_id}/revoke_tokens")
    for account in (broken, healthy):
        get_queue().put(RefreshTokenJob(account_id=account.account_id))

    def settled() -> bool:
        row = stored_account(broken.account_id)
        return bool(row and row["status"] == "reauth_required")

    wait_for(settled, what="the revoked account to need re-auth")
    wait_for(lambda: generation(healthy.account_id) == 2, what="the healthy refresh")
    row = stored_account(broken.account_id)
    # Nothing deleted: the account and its (dead) tokens stay until an admin re-authorizes.
    assert row is not None and row["generation"] == 1
    assert stored_account(healthy.account_id)["status"] == "active"  # type: ignore[index]
    assert contacts_work(stack, isolated_env, healthy)
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 0
