"""Contact events under vendor faults, end to end through the running stack.

- Unisender down for a while: every event is applied once it is back, and the list ends up
  exactly as amoCRM says (re-applying a retried batch changes nothing).
- A poison event (Unisender refusing the account's key) is buried, shown by the CLI and the
  status page, and replayed by `amosync queue kick` once the cause is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from cli.main import app
from devstack.stack import Stack
from shared.jobqueue import get_queue
from shared.jobs import ContactEvent, ContactEventsJob, EmailValue
from testing.accounts import install_account
from testing.sync import (
    SyncAccount,
    amo_control,
    expected_addresses,
    list_addresses,
    wait_run,
)
from testing.widget import connect_unisender, unisender_url, wait_for

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


def test_one_poison_event_does_not_hold_back_the_rest_of_its_batch(
    stack: Stack, isolated_env: dict[str, str], db
) -> None:  # type: ignore[no-untyped-def]
    """A job whose contact id is past BIGINT, queued among healthy jobs of the same account.

    The webhook intake skips such ids now, so the job goes on the queue directly (as one queued
    before that check, or by any other producer, would be): MySQL refuses it, and only it may be
    parked; the jobs beside it in the consumer's batch are applied.
    """
    account = _connected(stack, isolated_env)
    healthy = [f"healthy.{n}@example.com" for n in range(3)]
    added = _changes(
        stack,
        account.account_id,
        notify=False,
        add=[{"name": f"Healthy {n}", "emails": [email]} for n, email in enumerate(healthy)],
    )["added"]
    now = int(time.time())

    def job(event: ContactEvent) -> ContactEventsJob:
        return ContactEventsJob(account_id=account.account_id, events=[event], received_at=now)

    def healthy_job(n: int) -> ContactEventsJob:
        email = EmailValue(value=healthy[n])
        return job(
            ContactEvent(
                action="add",
                contact_id=added[n],
                name=f"Healthy {n}",
                updated_at=now,
                emails=[email],
            )
        )

    poison = ContactEvent.model_construct(
        action="add",
        contact_id=2**64,
        name="Too Big",
        updated_at=now,
        emails=[EmailValue(value="too.big@example.com")],
    )
    # Back to back, so the consumer's batch (it lingers for more jobs) holds all four.
    queue = get_queue()
    queue.put(healthy_job(0))
    poison_id = queue.put(job(poison))
    queue.put(healthy_job(1))
    queue.put(healthy_job(2))

    wait_for(
        lambda: set(healthy) <= list_addresses(stack, account),
        timeout=45,
        what="the healthy jobs of the same batch to be applied",
    )
    parked = wait_for(lambda: _parked(db, account.account_id), timeout=45, what="the poison")
    assert [p["job_id"] for p in parked] == [poison_id]
    assert "database refused the event's data" in parked[0]["reason"]
    time.sleep(2)  # nothing else gets parked afterwards
    assert len(_parked(db, account.account_id)) == 1
