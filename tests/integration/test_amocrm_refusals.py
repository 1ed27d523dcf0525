"""amoCRM refusals outside full sync and token refresh: events, /contacts, connect, 402 pauses.

Each path that meets amoCRM goes through `shared.accounts.record_amocrm_failure`: a 401 that
survived a refresh asks for re-authorization, a 402 (unpaid) keeps the status and pauses
scheduled reconciles. A 403 is never an account status: it holds the egress (shared.blocks) and
the work waits (tests/integration/test_amocrm_blocks.py follows a block to its end).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import requests

from shared import widget_connect
from shared.accounts import (
    UNPAID_PAUSE,
    get_account,
    list_account_overviews,
    reconcile_allowed_sql,
    record_amocrm_failure,
)
from shared.amocrm import errors as amo_errors
from shared.clock import utcnow
from shared.consumers.contact_events import handle_event_batch
from shared.db import get_database
from shared.jobqueue import Delivery
from shared.jobs import ContactEvent, ContactEventsJob, EmailValue
from shared.settings import get_settings
from shared.webhook_intake import ensure_webhook_secret
from tests.integration.test_fullsync import Sandboxes, connect, env, run_sync, servers  # noqa: F401
from tests.integration.test_tokens import install_from_widget

pytestmark = pytest.mark.integration

CONTACTS = str(Path(__file__).resolve().parents[2] / "functions" / "contacts" / "main.py")


def block(env: Sandboxes, account_id: int, blocked: bool = True) -> None:  # noqa: F811
    resp = requests.patch(
        f"{env.amo_url}/_sandbox/accounts/{account_id}", json={"blocked": blocked}, timeout=5
    )
    assert resp.status_code == 200


@pytest.fixture
def amo_faults(env: Sandboxes) -> Iterator[Any]:  # noqa: F811
    def add(status: int, count: int, path_prefix: str = "/api/v4") -> None:
        requests.post(
            f"{env.amo_url}/_sandbox/faults",
            json={"status": status, "count": count, "path_prefix": path_prefix},
            timeout=5,
        ).raise_for_status()

    yield add
    requests.delete(f"{env.amo_url}/_sandbox/faults", timeout=5)


def job(account_id: int, *events: ContactEvent) -> Delivery[ContactEventsJob]:
    return Delivery(
        job_id=1,
        job=ContactEventsJob(account_id=account_id, events=list(events), received_at=time.time()),
        attempts=1,
    )


@pytest.mark.parametrize("needs", ["restore", "enum_refresh"])
def test_events_needing_a_blocked_amocrm_wait_and_keep_the_account_active(
    env: Sandboxes,  # noqa: F811
    needs: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acc = connect(env)
    db = get_database()
    if needs == "restore":
        # A restore without fields is read back from amoCRM.
        event = ContactEvent(action="restore", contact_id=1, updated_at=100)
    else:
        # Restricted email types: an unknown webhook enum id needs the field's enums.
        db.execute("UPDATE accounts SET email_types = 'WORK' WHERE id = %s", (acc.account_id,))
        values = [EmailValue(value="a@x.ru", enum_id=987)]
        event = ContactEvent(action="add", contact_id=1, updated_at=100, emails=values)
    block(env, acc.account_id)

    delivery = job(acc.account_id, event)
    with caplog.at_level("ERROR", logger="shared.blocks"):
        handle_event_batch([delivery])

    # Retried after the next probe, without spending the job's retry budget; never buried.
    assert (delivery.outcome, delivery.deferred) == ("retry", True)
    assert delivery.reason is not None and "403" in delivery.reason
    account = get_account(db, acc.account_id)
    assert account is not None and (account.status, account.status_reason) == ("active", None)
    alerts = [r for r in caplog.records if getattr(r, "event", None) == "amocrm_ip_blocked"]
    assert [r.levelname for r in alerts] == ["ERROR"]


def test_events_meeting_a_401_after_refresh_mark_reauth_required(
    env: Sandboxes,  # noqa: F811
    amo_faults: Any,
) -> None:
    acc = connect(env)
    amo_faults(401, 2, "/api/v4/contacts")  # the read and its retry after a good refresh
    delivery = job(acc.account_id, ContactEvent(action="restore", contact_id=1, updated_at=1))
    handle_event_batch([delivery])
    assert delivery.outcome == "bury"
    account = get_account(get_database(), acc.account_id)
    assert account is not None and account.status == "reauth_required"


def test_contacts_page_during_a_block_answers_503(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env, contacts=1)
    client = functions_framework.create_app("contacts", CONTACTS).test_client()
    admin = {"Authorization": f"Bearer {get_settings().admin_token.get_secret_value()}"}
    ok = client.get("/contacts", query_string={"account_id": acc.account_id}, headers=admin)
    assert ok.status_code == 200 and ok.json["count"] == 1

    block(env, acc.account_id)
    resp = client.get("/contacts", query_string={"account_id": acc.account_id}, headers=admin)
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "amocrm_blocked"
    account = get_account(get_database(), acc.account_id)
    assert account is not None and account.status == "active"


def test_connect_and_disconnect_during_a_block(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env)
    db = get_database()
    account = get_account(db, acc.account_id)
    assert account is not None
    block(env, acc.account_id)
    with pytest.raises(amo_errors.Blocked):
        widget_connect.connect(db, account, api_key=acc.api_key)
    after = get_account(db, acc.account_id)
    assert after is not None and after.status == "active"

    # Disconnecting still works without amoCRM; the account stays active.
    ensure_webhook_secret(db, acc.account_id)
    result = widget_connect.disconnect(db, account)
    assert result["webhook_removed"] is False and result["key_forgotten"] is True
    after = get_account(db, acc.account_id)
    assert after is not None and after.status == "active"


def _reconcilable(account_id: int) -> bool:
    row = get_database().fetch_one(
        f"SELECT a.id FROM accounts a WHERE a.id = %s AND {reconcile_allowed_sql('a')}",  # noqa: S608
        (account_id,),
    )
    return row is not None


def test_402_keeps_the_status_and_pauses_reconciles_once(
    env: Sandboxes,  # noqa: F811
    amo_faults: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acc = connect(env, contacts=2)
    db = get_database()
    amo_faults(402, 10)
    with caplog.at_level("WARNING", logger="shared.accounts"):
        run = run_sync(acc.account_id)  # a manual run still goes to amoCRM
        again = run_sync(acc.account_id)
    assert run["status"] == again["status"] == "failed"
    assert "PaymentRequired" in run["error"]
    account = get_account(db, acc.account_id)
    assert account is not None and account.status == "active" and account.status_reason is None
    assert account.is_paused() and "402" in (account.paused_reason or "")
    assert account.paused_until is not None
    assert abs(account.paused_until - (utcnow() + UNPAID_PAUSE)) < timedelta(minutes=1)
    paused = [r for r in caplog.records if getattr(r, "event", None) == "account_reconciles_paused"]
    assert len(paused) == 1  # the second failure neither extends the pause nor logs again
    assert not _reconcilable(acc.account_id)
    (shown,) = [o.as_dict() for o in list_account_overviews(db) if o.account.id == acc.account_id]
    assert shown["status"] == "active" and shown["paused_until"] is not None

    # The pause ends by itself; then a reconcile may try again.
    db.execute(
        "UPDATE accounts SET paused_until = %s WHERE id = %s",
        (utcnow() - timedelta(seconds=1), acc.account_id),
    )
    assert _reconcilable(acc.account_id)
    after = get_account(db, acc.account_id)
    assert after is not None and not after.is_paused()
    assert record_amocrm_failure(db, acc.account_id, amo_errors.PaymentRequired("402")) is False
    assert not _reconcilable(acc.account_id)


def test_a_new_install_lifts_the_pause(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env)
    db = get_database()
    record_amocrm_failure(db, acc.account_id, amo_errors.PaymentRequired("402", status=402))
    install_from_widget(env.world, env.world.account(acc.account_id))
    account = get_account(db, acc.account_id)
    assert account is not None and account.paused_until is None and account.paused_reason is None
    assert _reconcilable(acc.account_id)
