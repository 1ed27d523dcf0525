"""Contact events under vendor faults, end to end through the running stack.

- Unisender down for a while: every event is applied once it is back, and the list ends up
  exactly as amoCRM says (re-applying a retried batch changes nothing).
- A poison event (Unisender refusing the account's key) is buried, shown by the CLI and the
  status page, and replayed by `amosync queue kick` once the cause is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from cli.devstack import Stack
from cli.main import app
from tests.e2e.flows_accounts import install_account
from tests.e2e.flows_sync import (
    SyncAccount,
    amo_control,
    expected_addresses,
    list_addresses,
    wait_run,
)
from tests.e2e.flows_widget import connect_unisender, unisender_url
from tests.reliability.support import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def _connected(stack: Stack, env: Mapping[str, str]) -> SyncAccount:
    installed = install_account(stack, env)
    connected = connect_unisender(stack, env, installed.account_id)
    if connected.sync_run_id is not None:
        wait_run(stack, env, connected.sync_run_id)
    return SyncAccount(installed.account_id, installed.name, connected.api_key, connected.list_id)


def _fault(stack: Stack, **fault: Any) -> int:
    resp = requests.post(f"{unisender_url(stack)}/_sandbox/faults", json=fault, timeout=5)
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _clear_fault(stack: Stack, fault_id: int) -> None:
    requests.delete(f"{unisender_url(stack)}/_sandbox/faults/{fault_id}", timeout=5)


def _calls(stack: Stack, api_key: str) -> list[dict[str, Any]]:
    resp = requests.get(f"{unisender_url(stack)}/_sandbox/keys/{api_key}/calls", timeout=5)
    return list(resp.json()["log"])


def _changes(stack: Stack, account_id: int, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = amo_control(
        stack, "POST", f"/accounts/{account_id}/changes", json=body
    )
    assert all(d["status"] == 200 for d in result["deliveries"]), result
    return result


def _parked(db, account_id: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return list(
        db.fetch_all(
            "SELECT tube, job_id, reason FROM parked_jobs WHERE account_id = %s", (account_id,)
        )
    )


def test_unisender_down_for_a_while_then_every_event_applied(
    stack: Stack, isolated_env: dict[str, str], db
) -> None:  # type: ignore[no-untyped-def]
    account = _connected(stack, isolated_env)
    fault = _fault(stack, kind="outage", status=503, api_key=account.api_key)
    try:
        added = _changes(
            stack,
            account.account_id,
            add=[{"name": f"Outage {i}", "emails": [f"outage{i}@example.com"]} for i in range(6)],
        )["added"]
        _changes(
            stack,
            account.account_id,
            update=[{"id": added[0], "emails": ["outage0.new@example.com"]}],
            delete=[added[1]],
        )
        # The consumer met the outage (and released its jobs for a retry) before it ends.
        wait_for(
            lambda: any(
                str(c.get("outcome", "")).startswith("fault")
                for c in _calls(stack, account.api_key)
            ),
            timeout=30,
            what="a call refused by the outage",
        )
    finally:
        _clear_fault(stack, fault)
    wanted = expected_addresses(stack, account.account_id)
    assert "outage0.new@example.com" in wanted and "outage1@example.com" not in wanted
    wait_for(
        lambda: list_addresses(stack, account) == wanted,
        timeout=60,
        what="the list to match amoCRM after the outage",
    )
    assert _parked(db, account.account_id) == []


def test_a_poison_event_is_buried_shown_and_replayable(
    stack: Stack, isolated_env: dict[str, str], db
) -> None:  # type: ignore[no-untyped-def]
    account = _connected(stack, isolated_env)
    # Unisender refusing the key is not transient: the consumer must park the job, not spin.
    fault = _fault(stack, kind="error", code="invalid_api_key", api_key=account.api_key)
    try:
        _changes(
            stack,
            account.account_id,
            add=[{"name": "Poison Pat", "emails": ["poison.pat@example.com"]}],
        )
        parked = wait_for(
            lambda: _parked(db, account.account_id),
            timeout=30,
            what="the job to be buried",
        )
    finally:
        _clear_fault(stack, fault)
    assert parked[0]["tube"] == "contact-events"
    job_id = parked[0]["job_id"]
    assert "key" in parked[0]["reason"].lower()

    runner = CliRunner()
    shown = runner.invoke(app, ["queue", "buried", "contact-events"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert str(job_id) in shown.output and str(account.account_id) in shown.output
    stats = runner.invoke(app, ["queue", "stats", "--json"])
    assert stats.exit_code == 0
    import json

    assert json.loads(stats.output)["contact-events"]["current-jobs-buried"] >= 1

    page = requests.get(
        f"{stack.gateway_url}/status",
        headers={"Authorization": f"Bearer {isolated_env['ADMIN_TOKEN']}"},
        timeout=15,
    )
    assert page.status_code == 200
    assert str(job_id) in page.text and "contact-events" in page.text

    assert "poison.pat@example.com" not in list_addresses(stack, account)
    kicked = runner.invoke(app, ["queue", "kick", "contact-events"])
    assert kicked.exit_code == 0, kicked.output
    wait_for(
        lambda: "poison.pat@example.com" in list_addresses(stack, account),
        timeout=30,
        what="the replayed event to be applied",
    )
    assert _parked(db, account.account_id) == []


# Known bug (shared/incremental.py, reported to the webhook work's owner): a batch's events are
# applied per account in one go, and any failure retries every job of that account in the
# batch; a permanent one (here MySQL's out-of-range id) is classified as transient, so after
# JOB_MAX_ATTEMPTS the healthy jobs are buried with the poison. The fix: bound ids at intake
# (BIGINT), classify data errors as poison, and on a failure re-try jobs one by one.
@pytest.mark.xfail(strict=True, reason="one poison event buries its whole batch (incremental)")
def test_one_poison_event_does_not_hold_back_the_rest_of_its_batch(
    stack: Stack, isolated_env: dict[str, str], db
) -> None:  # type: ignore[no-untyped-def]
    """A webhook whose contact id is past BIGINT passes the intake; only it may be parked."""
    account = _connected(stack, isolated_env)
    hooks = amo_control(stack, "GET", f"/accounts/{account.account_id}")["webhooks"]
    destination = next(h["destination"] for h in hooks if "/webhook/" in h["destination"])
    url = destination.replace(isolated_env["PUBLIC_URL"].rstrip("/"), stack.gateway_url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    poison = (
        f"account[id]={account.account_id}&contacts[add][0][id]={2**64}"
        "&contacts[add][0][name]=Too+Big&contacts[add][0][type]=contact"
        "&contacts[add][0][custom_fields][0][id]=1&contacts[add][0][custom_fields][0][code]=EMAIL"
        "&contacts[add][0][custom_fields][0][values][0][value]=too.big@example.com"
    )
    assert requests.post(url, data=poison, headers=form, timeout=10).status_code == 200
    _changes(
        stack,
        account.account_id,
        add=[{"name": "Healthy Hal", "emails": ["healthy.hal@example.com"]}],
    )
    wait_for(
        lambda: "healthy.hal@example.com" in list_addresses(stack, account),
        timeout=45,
        what="the healthy event of the same batch to be applied",
    )
    parked = wait_for(lambda: _parked(db, account.account_id), timeout=45, what="the poison")
    assert len(parked) == 1
