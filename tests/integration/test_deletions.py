"""Deletions we dated ourselves are repaired by the next amoCRM read (full sync, restore)."""

from __future__ import annotations

import time

import pytest

from shared.consumers.contact_events import handle_event_batch
from shared.db import get_database
from shared.jobqueue import Delivery
from shared.jobs import ContactEvent, ContactEventsJob
from tests.integration.test_fullsync import Sandboxes, connect, env, run_sync, servers  # noqa: F401

pytestmark = pytest.mark.integration


def _webhook(account_id: int, *events: ContactEvent, received_at: float) -> None:
    job = ContactEventsJob(account_id=account_id, events=list(events), received_at=received_at)
    delivery = Delivery(job_id=1, job=job, attempts=1)
    handle_event_batch([delivery])
    assert delivery.outcome is None, delivery.reason


def test_a_late_delete_that_beat_the_restore_is_repaired_by_the_next_full_sync(
    env: Sandboxes,  # noqa: F811
) -> None:
    acc = connect(env, contacts=2)
    run_sync(acc.account_id)
    alive = sorted(acc.list_emails())
    assert len(alive) == 2
    contact_id = int(
        (
            get_database().fetch_one(
                "SELECT contact_id FROM contact_emails WHERE account_id = %s AND email = %s",
                (acc.account_id, alive[0]),
            )
            or {}
        )["contact_id"]
    )
    # Deleted and restored in amoCRM; the restore arrived first, the delete webhook much later
    # (amoCRM retries): it is stamped with its receipt time and wins over the restore.
    delete = ContactEvent(action="delete", contact_id=contact_id)
    _webhook(acc.account_id, delete, received_at=time.time() + 2)
    assert acc.list_emails() == {alive[1]}

    time.sleep(2.1)  # the next full sync reads amoCRM after the delete was recorded
    run_sync(acc.account_id)
    assert acc.list_emails() == set(alive)
    row = get_database().fetch_one(
        "SELECT is_deleted, deleted_synthetic FROM contacts WHERE account_id = %s "
        "AND contact_id = %s",
        (acc.account_id, contact_id),
    )
    assert row is not None and not row["is_deleted"] and not row["deleted_synthetic"]
