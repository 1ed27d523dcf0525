"""Webhook health: a subscription amoCRM disabled (or lost) is found, re-subscribed, its gap
reconciled, the planner polls the account often until events arrive, the status page shows it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import requests

import shared.consumers.full_sync as fullsync
from shared import sync_runs
from shared.accounts import get_account
from shared.amocrm.models import Webhook
from shared.clock import aware_utcnow, utcnow
from shared.db import Database, Row, get_database
from shared.jobqueue import Delivery
from shared.status import collect_status, render_status_page
from shared.tokens import amocrm_client_for
from shared.webhook_health import check_due_webhooks, resubscribe
from shared.webhook_intake import WEBHOOK_EVENTS, ensure_webhook_secret, webhook_destination
from tests.integration.test_fullsync import (  # noqa: F401 - fixtures
    Connected,
    Sandboxes,
    _take_job,
    connect,
    env,
    run_sync,
    servers,
)

pytestmark = pytest.mark.integration


def subscribed(sandboxes: Sandboxes, contacts: int = 1) -> tuple[Connected, str]:
    """A connected account, fully synced once, subscribed the way the widget's connect does."""
    acc = connect(sandboxes, contacts=contacts)
    assert run_sync(acc.account_id)["status"] == "done"
    db = get_database()
    destination = webhook_destination(acc.account_id, ensure_webhook_secret(db, acc.account_id))
    resubscribe(_client(acc.account_id), destination, None)
    return acc, destination


def _client(account_id: int) -> Any:
    account = get_account(get_database(), account_id)
    assert account is not None
    return amocrm_client_for(account)


def hooks(account_id: int, destination: str) -> list[Webhook]:
    return _client(account_id).list_webhooks(destination)


def health(db: Database, account_id: int) -> Row:
    row = db.fetch_one("SELECT * FROM webhook_health WHERE account_id = %s", (account_id,))
    assert row is not None
    return row


def healthy_in_plan(db: Database, account_id: int) -> bool:
    return sync_runs.reconcile_plan(db).loads[account_id].webhooks_healthy


def tick(account_id: int, after: timedelta = timedelta(0)) -> dict[str, int]:
    return check_due_webhooks(aware_utcnow() + after, account_ids=[account_id])


CHECK_INTERVAL = timedelta(hours=6, minutes=1)  # RECONCILE_HEALTHY_INTERVAL_MINUTES (360) + 1


def test_a_disabled_hook_is_resubscribed_its_gap_reconciled_and_shown(
    env: Sandboxes,  # noqa: F811
    db: Database,
) -> None:
    acc, destination = subscribed(env)
    # No event ever arrived: by events alone the account looks lost.
    assert not healthy_in_plan(db, acc.account_id)

    # The first check finds it enabled: a quiet account with a working hook counts as healthy.
    assert tick(acc.account_id) == {"due": 1, "checked": 1, "resubscribed": 0, "failed": 0}
    row = health(db, acc.account_id)
    assert (row["found"], row["resubscribed_at"], row["confirmed_at"] is not None) == (
        "enabled",
        None,
        True,
    )
    assert healthy_in_plan(db, acc.account_id)
    # Checked once per interval, not on every tick.
    assert tick(acc.account_id)["due"] == 0

    # amoCRM disables the hook (as after 100 failed deliveries); a change made meanwhile is not
    # delivered to anyone.
    (hook,) = hooks(acc.account_id, destination)
    resp = requests.patch(
        f"{env.amo_url}/_sandbox/accounts/{acc.account_id}/webhooks/{hook.id}",
        json={"disabled": True},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.json()["disabled"] is True
    account = env.world.account(acc.account_id)
    missed = f"missed.{acc.account_id}@example.com"
    env.world.apply_entity(account, {"name": "Missed", "emails": [missed]})
    assert missed not in acc.list_emails()

    before = sync_runs.latest_sync_run(db, acc.account_id)
    assert tick(acc.account_id, CHECK_INTERVAL) == {
        "due": 1,
        "checked": 1,
        "resubscribed": 1,
        "failed": 0,
    }
    # Subscribed afresh: one enabled hook for our destination and events.
    (again,) = hooks(acc.account_id, destination)
    assert not again.disabled and set(again.settings) == set(WEBHOOK_EVENTS)
    # Recorded: when and why, and the reconcile queued for the gap.
    row = health(db, acc.account_id)
    assert row["found"] == "disabled" and row["resubscribes"] == 1
    assert row["resubscribed_at"] is not None and "disabled" in row["resubscribe_reason"]
    gap = sync_runs.latest_sync_run(db, acc.account_id)
    assert gap is not None and before is not None and gap["id"] > before["id"]
    assert (gap["kind"], gap["status"], gap["requested_by"]) == (
        "incremental",
        "queued",
        "webhook-health",
    )
    assert row["gap_run_id"] == gap["id"]

    # The planner polls it often now, though the hook is enabled again: until amoCRM delivers.
    assert not healthy_in_plan(db, acc.account_id)

    # The status page (and `amosync status`, same snapshot) shows the re-subscription.
    page = render_status_page(collect_status(db))
    assert "re-subscribed" in page and "amoCRM had disabled our subscription" in page
    assert f"gap reconcile run {gap['id']}" in page

    # The gap reconcile brings the missed change.
    job = _take_job(gap["id"])
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=1)])
    done = sync_runs.get_sync_run(db, gap["id"])
    assert done is not None and done["status"] == "done", done
    assert missed in acc.list_emails()

    # An event that arrived after the re-subscription proves the hook works: healthy again.
    next_minute = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=1)
    db.execute(
        "INSERT INTO event_minutes (account_id, minute, events) VALUES (%s, %s, 1)",
        (acc.account_id, next_minute),
    )
    assert healthy_in_plan(db, acc.account_id)


def test_a_deleted_hook_is_resubscribed_a_failed_check_changes_nothing(
    env: Sandboxes,  # noqa: F811
    db: Database,
) -> None:
    acc, destination = subscribed(env)
    _client(acc.account_id).delete_webhook(destination)
    assert hooks(acc.account_id, destination) == []
    assert tick(acc.account_id)["resubscribed"] == 1
    assert len(hooks(acc.account_id, destination)) == 1
    row = health(db, acc.account_id)
    assert row["found"] == "missing" and "missing" in row["resubscribe_reason"]

    # amoCRM down at the next check: recorded as an error, nothing re-subscribed, the account
    # stays active and still counts as unhealthy (re-subscribed, no event since).
    fault = requests.post(
        f"{env.amo_url}/_sandbox/faults",
        json={"status": 503, "count": 20, "path_prefix": "/api/v4/webhooks"},
        timeout=5,
    )
    assert fault.status_code in (200, 201)
    try:
        counts = tick(acc.account_id, CHECK_INTERVAL)
    finally:
        requests.delete(f"{env.amo_url}/_sandbox/faults", timeout=5)
    assert counts == {"due": 1, "checked": 1, "resubscribed": 0, "failed": 1}
    row = health(db, acc.account_id)
    assert row["found"] == "error" and row["resubscribes"] == 1
    assert row["error"].startswith("Transient (HTTP 503)")
    # The destination's secret (in the request's query) is nowhere in what is stored or shown.
    secret = destination.rsplit("/", 1)[1]
    assert secret not in row["error"]
    assert secret not in render_status_page(collect_status(db))
    account = get_account(db, acc.account_id)
    assert account is not None and account.status == "active"
    assert not healthy_in_plan(db, acc.account_id)
    assert len(hooks(acc.account_id, destination)) == 1
