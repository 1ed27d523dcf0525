"""Unsubscribed stays unsubscribed (issue 12 item 5) and removals in batches (item 6).

A person unsubscribes through the Unisender emulator's control route (as they would with the
link in a mailing); then every path that writes to the list runs: webhook updates, a restore,
full syncs, reconnects. The emulator lists every call that tried to put an opted-out address
back on a list (`resubscribe_attempts`): it must stay empty.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared.consumers.contact_events import handle_event_batch
from shared.db import Database, get_database
from shared.unisender.client import UnisenderClient
from shared.unisender_link import save_unisender_link
from tests.integration.test_fullsync import (  # noqa: F401
    Connected,
    Sandboxes,
    connect,
    env,
    run_sync,
    servers,
)
from tests.integration.test_incremental import deliveries, event, linked  # noqa: F401
from tests.integration.test_sync_apply import Tenant, uni_url  # noqa: F401

pytestmark = pytest.mark.integration


def _key_state(base: str, api_key: str) -> dict[str, Any]:
    return dict(requests.get(f"{base}/_sandbox/keys/{api_key}", timeout=5).json())


def _unsubscribe(base: str, api_key: str, email: str, list_id: int | None) -> None:
    """The person clicks "unsubscribe": from our list, or (no list) from everything."""
    body: dict[str, Any] = {"event": "unsubscribe", "email": email}
    if list_id is not None:
        body["list_ids"] = [list_id]
    response = requests.post(f"{base}/_sandbox/keys/{api_key}/simulate", json=body, timeout=5)
    response.raise_for_status()


def _list_status(base: str, api_key: str, email: str, list_id: int) -> str | None:
    contact = next(c for c in _key_state(base, api_key)["contacts"] if c["email"] == email)
    return next((m["status"] for m in contact["lists"] if m["id"] == list_id), None)


def _member_state(account_id: int, email: str) -> str | None:
    row = get_database().fetch_one(
        "SELECT state FROM list_members WHERE account_id = %s AND email = %s",
        (account_id, email),
    )
    return str(row["state"]) if row else None


# incremental (webhook events) --------------------------------------------------------------------


def test_a_webhook_update_never_reactivates_a_list_unsubscribe(linked: Tenant) -> None:  # noqa: F811
    handle_event_batch(deliveries(linked.account_id, [event("add", 1, "u@x.ru", name="Ann")]))
    _unsubscribe(linked.base, linked.api_key, "u@x.ru", linked.list_id)
    # A name-only update of an address we hold as a member: the row goes without our list id.
    batch = deliveries(linked.account_id, [event("update", 1, "u@x.ru", name="Anna", at=101)])
    handle_event_batch(batch)
    assert all(d.outcome is None for d in batch)
    assert linked.contacts()["u@x.ru"]["fields"]["Name"] == "Anna"
    assert _list_status(linked.base, linked.api_key, "u@x.ru", linked.list_id) == "unsubscribed"
    assert linked.resubscribe_attempts() == []


def test_a_restore_never_reactivates_someone_who_unsubscribed_after_the_delete(
    linked: Tenant,  # noqa: F811
) -> None:
    handle_event_batch(deliveries(linked.account_id, [event("add", 1, "r@x.ru")]))
    handle_event_batch(deliveries(linked.account_id, [event("delete", 1, at=101)]))
    assert linked.in_list() == set()
    assert _member_state(linked.account_id, "r@x.ru") == "excluded"
    # While the contact is deleted in amoCRM, the person unsubscribes from everything.
    _unsubscribe(linked.base, linked.api_key, "r@x.ru", None)
    handle_event_batch(deliveries(linked.account_id, [event("restore", 1, "r@x.ru", at=102)]))
    assert linked.resubscribe_attempts() == []
    assert _list_status(linked.base, linked.api_key, "r@x.ru", linked.list_id) is None
    assert _member_state(linked.account_id, "r@x.ru") == "unsubscribed"
    # The suppression record holds: a later update does not even ask Unisender again.
    handle_event_batch(deliveries(linked.account_id, [event("update", 1, "r@x.ru", at=103)]))
    assert linked.resubscribe_attempts() == []
    assert _member_state(linked.account_id, "r@x.ru") == "unsubscribed"


def test_the_contact_view_does_not_call_an_unsubscribed_address_subscribed(
    linked: Tenant,  # noqa: F811
) -> None:
    from shared.accounts import get_account
    from shared.lookup import contact_view

    handle_event_batch(deliveries(linked.account_id, [event("add", 1, "v@x.ru", name="Vera")]))
    db = get_database()
    account = get_account(db, linked.account_id)
    assert account is not None

    def view() -> dict[str, Any]:
        with UnisenderClient(linked.api_key, base_url=f"{linked.base}/en/api") as uni:
            found = contact_view(db, uni, account, email="v@x.ru", list_id=linked.list_id)
        assert found is not None and found["unisender"] is not None
        return dict(found["unisender"])

    assert (view()["subscribed"], view()["list_status"]) == (True, "active")
    _unsubscribe(linked.base, linked.api_key, "v@x.ru", linked.list_id)
    after = view()
    # Still on the list (with that status), but not a subscriber any more.
    assert (after["in_account_list"], after["list_status"], after["subscribed"]) == (
        True,
        "unsubscribed",
        False,
    )


# full sync and reconnect ---------------------------------------------------------------------


def _renamed(env: Sandboxes, acc: Connected, suffix: str) -> None:  # noqa: F811
    account = env.world.account(acc.account_id)
    for entity in list(account.entities.values()):
        env.world.update_entity(account, entity.id, {"name": f"{entity.name} {suffix}"})


def _emails(acc: Connected, *numbers: int) -> list[str]:
    return [f"p{n}.{acc.account_id}@example.com" for n in numbers]


def test_a_full_sync_never_reactivates_a_list_unsubscribe(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env, contacts=5)
    assert run_sync(acc.account_id)["status"] == "done"
    gone, everywhere = _emails(acc, 0, 1)
    _unsubscribe(env.uni_url, acc.api_key, gone, acc.list_id)
    _unsubscribe(env.uni_url, acc.api_key, everywhere, None)
    _renamed(env, acc, "renamed")
    run = run_sync(acc.account_id)
    assert run["status"] == "done", run["error"]
    assert _key_state(env.uni_url, acc.api_key)["resubscribe_attempts"] == []
    assert _list_status(env.uni_url, acc.api_key, gone, acc.list_id) == "unsubscribed"
    assert acc.list_emails() == set(_emails(acc, 2, 3, 4))


@pytest.mark.parametrize("contacts", [5, 30])  # getContact per address; one list export
def test_a_reconnect_that_forgets_our_markers_never_reactivates_anyone(
    env: Sandboxes,  # noqa: F811
    contacts: int,
) -> None:
    acc = connect(env, contacts=contacts)
    assert run_sync(acc.account_id)["status"] == "done"
    opted, everywhere = _emails(acc, 1, 2)
    _unsubscribe(env.uni_url, acc.api_key, opted, acc.list_id)
    # Taken off the list by hand in Unisender, then unsubscribed from everything: on no list,
    # so only an account-wide look finds the opt-out.
    assert acc.uni.exclude(everywhere, [acc.list_id])
    _unsubscribe(env.uni_url, acc.api_key, everywhere, None)
    db = get_database()
    # Reconnected to another list and back (as with a new key): what we did in the list is
    # forgotten, so the next full sync treats every address as new to it.
    other = acc.uni.create_list(f"other {acc.account_id}")
    save_unisender_link(db, acc.account_id, api_key=acc.api_key, list_id=other, list_title="o")
    save_unisender_link(
        db, acc.account_id, api_key=acc.api_key, list_id=acc.list_id, list_title="t"
    )
    assert _member_state(acc.account_id, opted) is None
    run = run_sync(acc.account_id)
    assert run["status"] == "done", run["error"]
    assert _key_state(env.uni_url, acc.api_key)["resubscribe_attempts"] == []
    assert _member_state(acc.account_id, opted) == "unsubscribed"
    assert _member_state(acc.account_id, everywhere) == "unsubscribed"
    assert opted not in acc.list_emails() and len(acc.list_emails()) == contacts - 2

    # The suppression record itself survives later reconnects, with the same key or another
    # list, and no later full sync overwrites it.
    save_unisender_link(
        db, acc.account_id, api_key=acc.api_key, list_id=acc.list_id, list_title="t"
    )
    save_unisender_link(db, acc.account_id, api_key=acc.api_key, list_id=other, list_title="o")
    save_unisender_link(
        db, acc.account_id, api_key=acc.api_key, list_id=acc.list_id, list_title="t"
    )
    assert _member_state(acc.account_id, opted) == "unsubscribed"
    _renamed(env, acc, "again")
    assert run_sync(acc.account_id)["status"] == "done"
    assert _member_state(acc.account_id, opted) == "unsubscribed"
    assert _key_state(env.uni_url, acc.api_key)["resubscribe_attempts"] == []


# removals in batches -------------------------------------------------------------------------


def test_removing_1000_addresses_in_a_full_sync_costs_at_most_5_unisender_calls(
    env: Sandboxes,  # noqa: F811
) -> None:
    acc = connect(env, contacts=1002)
    assert run_sync(acc.account_id)["status"] == "done"
    keep = set(_emails(acc, 1000, 1001))
    _unsubscribe(env.uni_url, acc.api_key, _emails(acc, 7)[0], acc.list_id)
    account = env.world.account(acc.account_id)
    for entity in list(account.entities.values()):
        if entity.name not in ("Person 1000", "Person 1001"):
            env.world.set_deleted(account, entity.id, True)
    calls = f"{env.uni_url}/_sandbox/keys/{acc.api_key}/calls"
    requests.delete(calls, timeout=5).raise_for_status()

    run = run_sync(acc.account_id)
    assert run["status"] == "done", run["error"]
    counts = requests.get(calls, timeout=5).json()["counts"]
    assert sum(counts.values()) <= 5, counts
    assert "exclude" not in counts and "getContact" not in counts
    assert acc.list_emails() == keep
    assert run["emails_excluded"] == 999  # the one who unsubscribed is left alone ...
    assert _member_state(acc.account_id, _emails(acc, 7)[0]) == "unsubscribed"  # ... and known
    # Removed from our list only: the contacts stay in the Unisender account.
    assert len(_key_state(env.uni_url, acc.api_key)["contacts"]) == 1002


def test_the_export_is_read_once_per_run_and_reused(env: Sandboxes, db: Database) -> None:  # noqa: F811
    acc = connect(env, contacts=1100)
    assert run_sync(acc.account_id)["status"] == "done"
    account = env.world.account(acc.account_id)
    for entity in list(account.entities.values()):
        env.world.set_deleted(account, entity.id, True)
    calls = f"{env.uni_url}/_sandbox/keys/{acc.api_key}/calls"
    requests.delete(calls, timeout=5).raise_for_status()
    run = run_sync(acc.account_id)
    assert run["status"] == "done", run["error"]
    counts = requests.get(calls, timeout=5).json()["counts"]
    assert counts.get("async/exportContacts") == 1, counts
    assert counts.get("importContacts") == 3 and acc.list_emails() == set()
