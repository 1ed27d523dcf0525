"""One name rule for every path that reads a contact from amoCRM (full sync, restore).

amoCRM may send an empty `name` with `first_name`/`last_name` set (reference §7). The full sync
and the restore path once built the contact's state each their own way, so such a contact's
Name in Unisender flipped between "Ann Lee" and "" from one run to the next.
"""

from __future__ import annotations

import time

import pytest
import requests

from shared.consumers.contact_events import handle_event_batch
from shared.db import get_database
from shared.jobqueue import Delivery
from shared.jobs import ContactEvent, ContactEventsJob
from shared.settings import get_settings
from tests.integration.test_fullsync import (  # noqa: F401
    Connected,
    Sandboxes,
    connect,
    env,
    run_sync,
    servers,
)

pytestmark = pytest.mark.integration


def _unisender_name(acc: Connected, email: str) -> str | None:
    base = get_settings().unisender_api_url.rsplit("/en/api", 1)[0]
    state = requests.get(f"{base}/_sandbox/keys/{acc.api_key}", timeout=5).json()
    for contact in state["contacts"]:
        if contact["email"] == email:
            return str(contact["fields"].get("Name", ""))
    return None


def _stored_name(account_id: int, contact_id: int) -> str:
    row = get_database().fetch_one(
        "SELECT name FROM contacts WHERE account_id = %s AND contact_id = %s",
        (account_id, contact_id),
    )
    assert row is not None
    return str(row["name"])


def test_a_contact_named_only_by_first_and_last_name_keeps_its_name_on_restore(
    env: Sandboxes,  # noqa: F811
) -> None:
    acc = connect(env)
    account = env.world.account(acc.account_id)
    email = f"ann.{acc.account_id}@example.com"
    contact = env.world.apply_entity(
        account, {"name": "", "first_name": "Ann", "last_name": "Lee", "emails": [email]}
    )
    run_sync(acc.account_id)
    assert _unisender_name(acc, email) == "Ann Lee"

    # A restore webhook carries no fields: the consumer reads the contact back from amoCRM.
    time.sleep(1.1)  # a newer second than the full sync's read, so the restore's state counts
    job = ContactEventsJob(
        account_id=acc.account_id,
        events=[ContactEvent(action="restore", contact_id=contact.id, updated_at=int(time.time()))],
        received_at=time.time(),
    )
    delivery = Delivery(job_id=1, job=job, attempts=1)
    handle_event_batch([delivery])
    assert delivery.outcome is None, delivery.reason
    assert _unisender_name(acc, email) == "Ann Lee"
    assert _stored_name(acc.account_id, contact.id) == "Ann Lee"

    # Nothing changed in amoCRM since: the next full sync has nothing to send.
    calls_before = len(acc.import_calls())
    run_sync(acc.account_id)
    assert _unisender_name(acc, email) == "Ann Lee"
    assert len(acc.import_calls()) == calls_before
