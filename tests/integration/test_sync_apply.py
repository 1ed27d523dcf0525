"""apply_contact_states against real MySQL and the Unisender emulator (in-thread)."""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from sandbox.unisender import SandboxConfig as UniConfig
from sandbox.unisender import create_app as create_uni
from shared.db import Database
from shared.sync import AccountBusy, ContactState, apply_contact_states
from shared.unisender.client import UnisenderClient

pytestmark = pytest.mark.integration

_ids = itertools.count(7_100_000 + secrets.randbelow(10**6) * 10)


@pytest.fixture(scope="module")
def uni_url() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_uni(UniConfig()), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@dataclass
class Tenant:
    db: Database
    account_id: int
    api_key: str
    list_id: int
    client: UnisenderClient
    base: str

    def apply(self, *states: ContactState, **kwargs: Any) -> Any:
        return apply_contact_states(
            self.db,
            self.client,
            account_id=self.account_id,
            list_id=self.list_id,
            states=list(states),
            **kwargs,
        )

    def contacts(self) -> dict[str, dict[str, Any]]:
        state = requests.get(f"{self.base}/_sandbox/keys/{self.api_key}", timeout=5).json()
        return {c["email"]: c for c in state["contacts"]}

    def in_list(self) -> set[str]:
        return {
            e
            for e, c in self.contacts().items()
            if any(m["id"] == self.list_id for m in c["lists"])
        }

    def import_calls(self) -> int:
        calls = requests.get(f"{self.base}/_sandbox/keys/{self.api_key}/calls", timeout=5).json()
        return int(calls["counts"].get("importContacts", 0))

    def resubscribe_attempts(self) -> list[dict[str, Any]]:
        """Calls that tried to put an opted-out address back (the emulator lists each)."""
        state = requests.get(f"{self.base}/_sandbox/keys/{self.api_key}", timeout=5).json()
        return list(state["resubscribe_attempts"])

    def member(self, email: str) -> dict[str, Any] | None:
        return self.db.fetch_one(
            "SELECT * FROM list_members WHERE account_id = %s AND email = %s",
            (self.account_id, email),
        )


def make_tenant(db: Database, base: str) -> Tenant:
    account_id = next(_ids)
    db.execute(
        "INSERT INTO accounts (id, name, host) VALUES (%s, %s, %s)",
        (account_id, f"t{account_id}", f"t{account_id}.amocrm.ru"),
    )
    key = "it" + secrets.token_hex(12)
    requests.post(f"{base}/_sandbox/keys", json={"api_key": key}, timeout=5).raise_for_status()
    client = UnisenderClient(key, base_url=f"{base}/en/api")
    list_id = client.ensure_list(f"amoCRM {account_id}")
    client.ensure_field("Name")
    return Tenant(db, account_id, key, list_id, client, base)


@pytest.fixture
def tenant(db: Database, uni_url: str) -> Tenant:
    return make_tenant(db, uni_url)


def state(
    cid: int, *emails: str, name: str = "N", at: int = 100, deleted: bool = False
) -> ContactState:
    return ContactState(cid, name, at, list(emails), deleted)


def test_add_update_delete_and_names(tenant: Tenant) -> None:
    result = tenant.apply(state(1, "a@x.ru", name="Ann"), state(2, "b@x.ru", "b2@x.ru", name="Bob"))
    assert result.rows_imported == 3 and result.import_calls == 1
    assert tenant.in_list() == {"a@x.ru", "b@x.ru", "b2@x.ru"}
    assert tenant.contacts()["a@x.ru"]["fields"]["Name"] == "Ann"

    # Changed email: the new one joins with the name, the old one leaves (excluded, not deleted).
    result = tenant.apply(state(1, "a.new@x.ru", name="Ann", at=101))
    assert tenant.in_list() == {"a.new@x.ru", "b@x.ru", "b2@x.ru"}
    assert "a@x.ru" in tenant.contacts()  # still known to Unisender, only out of the list
    assert result.emails_excluded == 1
    assert tenant.member("a@x.ru")["state"] == "excluded"  # type: ignore[index]

    tenant.apply(state(2, deleted=True, at=102))
    assert tenant.in_list() == {"a.new@x.ru"}


def test_only_new_or_changed_rows_are_imported(tenant: Tenant) -> None:
    tenant.apply(state(1, "a@x.ru", name="Ann"))
    calls = tenant.import_calls()
    result = tenant.apply(state(1, "a@x.ru", name="Ann", at=101))
    assert result.rows_imported == 0 and tenant.import_calls() == calls
    tenant.apply(state(1, "a@x.ru", name="Anna", at=102))  # a changed name is a changed row
    assert tenant.import_calls() == calls + 1
    assert tenant.contacts()["a@x.ru"]["fields"]["Name"] == "Anna"


def test_stale_state_does_not_overwrite_newer(tenant: Tenant) -> None:
    tenant.apply(state(1, "new@x.ru", at=200))
    result = tenant.apply(state(1, "old@x.ru", at=150))
    assert result.stale == 1
    assert tenant.in_list() == {"new@x.ru"}
    # Within one batch the newest state of a contact wins, whatever the order.
    tenant.apply(state(2, "late@x.ru", at=300), state(2, "early@x.ru", at=250))
    assert "late@x.ru" in tenant.in_list() and "early@x.ru" not in tenant.in_list()


def test_shared_address_stays_while_another_contact_has_it(tenant: Tenant) -> None:
    tenant.apply(state(1, "shared@x.ru", "one@x.ru"), state(2, "shared@x.ru"))
    tenant.apply(state(1, deleted=True, at=101))
    assert tenant.in_list() == {"shared@x.ru"}
    tenant.apply(state(2, "two@x.ru", at=102))  # the last holder drops it
    assert tenant.in_list() == {"two@x.ru"}


def test_accounts_sharing_an_address_are_isolated(db: Database, uni_url: str) -> None:
    first, second = make_tenant(db, uni_url), make_tenant(db, uni_url)
    first.apply(state(1, "same@x.ru"))
    second.apply(state(1, "same@x.ru"))  # same contact id too: ids differ per account anyway
    first.apply(state(1, deleted=True, at=101))
    assert first.in_list() == set()
    assert second.in_list() == {"same@x.ru"}
    assert second.member("same@x.ru")["state"] == "member"  # type: ignore[index]


def test_role_address_fails_per_row_while_the_rest_imports(tenant: Tenant) -> None:
    result = tenant.apply(state(1, "info@x.ru", "ok@x.ru"), state(2, "fine@x.ru"))
    assert result.row_errors == 1 and result.rows_imported == 2
    assert tenant.in_list() == {"ok@x.ru", "fine@x.ru"}
    failed = tenant.member("info@x.ru")
    assert failed is not None and failed["state"] == "failed" and failed["error_code"]
    calls = tenant.import_calls()
    tenant.apply(state(1, "info@x.ru", "ok@x.ru", at=101))  # not retried again and again
    assert tenant.import_calls() == calls


def test_batches_of_at_most_500_rows(tenant: Tenant) -> None:
    result = tenant.apply(*(state(i, f"c{i}@x.ru", name=f"C {i}") for i in range(1, 1201)))
    assert result.import_calls == 3 and result.rows_imported == 1200
    assert len(tenant.in_list()) == 1200


def test_unsubscribed_people_are_not_resubscribed(tenant: Tenant) -> None:
    tenant.apply(state(1, "u@x.ru", name="U"))
    requests.post(
        f"{tenant.base}/_sandbox/keys/{tenant.api_key}/unsubscribe",
        json={"email": "u@x.ru"},
        timeout=5,
    ).raise_for_status()
    tenant.apply(state(1, "u@x.ru", name="U2", at=101))
    contact = tenant.contacts()["u@x.ru"]
    assert contact["status"] == "unsubscribed"
    assert all(m["status"] == "unsubscribed" for m in contact["lists"])


def test_restore_readds_after_delete(tenant: Tenant) -> None:
    tenant.apply(state(1, "r@x.ru"))
    tenant.apply(state(1, deleted=True, at=101))
    assert tenant.in_list() == set()
    tenant.apply(state(1, "r@x.ru", at=102))
    assert tenant.in_list() == {"r@x.ru"}


def test_a_busy_account_is_retried(tenant: Tenant, db: Database) -> None:
    import pymysql

    other = pymysql.connect(**{**db._params, "cursorclass": pymysql.cursors.DictCursor})
    try:
        with other.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 0)", (f"amosync:list:{tenant.account_id}",))
        with pytest.raises(AccountBusy):
            tenant.apply(state(1, "busy@x.ru"), lock_timeout=0.1)
    finally:
        other.close()


def test_transient_failure_leaves_state_for_the_retry(tenant: Tenant) -> None:
    from shared.unisender import errors as uni_errors

    tenant.apply(state(1, "keep@x.ru"))
    fault = requests.post(
        f"{tenant.base}/_sandbox/faults",
        json={"kind": "outage", "method": "importContacts", "api_key": tenant.api_key, "count": 10},
        timeout=5,
    ).json()
    try:
        with pytest.raises(uni_errors.Transient):
            tenant.apply(state(1, "moved@x.ru", at=101))
    finally:
        requests.delete(f"{tenant.base}/_sandbox/faults/{fault['id']}", timeout=5)
    tenant.apply(state(1, "moved@x.ru", at=101))  # the retry still sees the old address to drop
    assert tenant.in_list() == {"moved@x.ru"}


def test_a_contact_seen_alive_by_amocrm_overrides_a_deletion_we_dated_ourselves(
    tenant: Tenant,
) -> None:
    tenant.apply(state(1, "back@x.ru", at=100))
    # A delete webhook delivered late: stamped with its receipt time, later than the restore.
    late_delete = ContactState(1, "", 500, [], True, received_at=500.0, synthetic_time=True)
    tenant.apply(late_delete)
    assert tenant.in_list() == set()
    # A webhook carrying amoCRM's older updated_at is still stale against it ...
    assert tenant.apply(state(1, "back@x.ru", at=200)).stale == 1
    # ... and so is an amoCRM read made before we recorded the deletion ...
    read_before = ContactState(1, "N", 200, ["back@x.ru"], received_at=400.0, authoritative=True)
    assert tenant.apply(read_before).stale == 1
    # ... but a read made after it sees the contact alive: that is the truth.
    read_after = ContactState(1, "N", 200, ["back@x.ru"], received_at=600.0, authoritative=True)
    assert tenant.apply(read_after).contacts_applied == 1
    assert tenant.in_list() == {"back@x.ru"}


def test_a_deletion_amocrm_dated_is_not_overridden_by_an_older_read(tenant: Tenant) -> None:
    tenant.apply(state(1, "gone@x.ru", at=100))
    tenant.apply(ContactState(1, "", 300, [], True, received_at=300.0))  # amoCRM's own time
    read = ContactState(1, "N", 200, ["gone@x.ru"], received_at=900.0, authoritative=True)
    assert tenant.apply(read).stale == 1
    assert tenant.in_list() == set()


def test_within_one_second_the_later_received_state_wins_across_batches(tenant: Tenant) -> None:
    second = ContactState(1, "N", 100, ["second@x.ru"], received_at=20.0)
    first = ContactState(1, "N", 100, ["first@x.ru"], received_at=10.0)
    tenant.apply(second)
    assert tenant.apply(first).stale == 1  # a retried older job applied after the newer one
    assert tenant.in_list() == {"second@x.ru"}


def _opt_out(tenant: Tenant, email: str, *, from_list: bool) -> None:
    body: dict[str, Any] = {"email": email}
    if from_list:
        body["list_ids"] = [tenant.list_id]
    requests.post(
        f"{tenant.base}/_sandbox/keys/{tenant.api_key}/unsubscribe", json=body, timeout=5
    ).raise_for_status()


def _list_status(tenant: Tenant, email: str) -> str | None:
    lists = tenant.contacts()[email]["lists"]
    return next((m["status"] for m in lists if m["id"] == tenant.list_id), None)


def test_a_list_unsubscribe_survives_an_email_changing_away_and_back(tenant: Tenant) -> None:
    tenant.apply(state(1, "opt@x.ru", name="Opt"))
    _opt_out(tenant, "opt@x.ru", from_list=True)
    result = tenant.apply(state(1, "other@x.ru", name="Opt", at=101))  # changed away
    assert result.unsubscribed == 1 and result.emails_excluded == 0
    assert tenant.member("opt@x.ru")["state"] == "unsubscribed"  # type: ignore[index]
    tenant.apply(state(1, "opt@x.ru", name="Opt", at=102))  # and back
    assert _list_status(tenant, "opt@x.ru") == "unsubscribed"
    assert tenant.resubscribe_attempts() == []  # never imported again


def test_a_list_unsubscribe_survives_delete_and_restore(tenant: Tenant) -> None:
    tenant.apply(state(1, "gone@x.ru"))
    _opt_out(tenant, "gone@x.ru", from_list=True)
    tenant.apply(state(1, deleted=True, at=101))
    tenant.apply(state(1, "gone@x.ru", at=102))
    assert _list_status(tenant, "gone@x.ru") == "unsubscribed"
    assert tenant.member("gone@x.ru")["state"] == "unsubscribed"  # type: ignore[index]


def test_an_address_we_excluded_is_checked_before_it_is_imported_again(tenant: Tenant) -> None:
    tenant.apply(state(1, "back@x.ru"))
    tenant.apply(state(1, "elsewhere@x.ru", at=101))  # excluded while still subscribed
    assert tenant.member("back@x.ru")["state"] == "excluded"  # type: ignore[index]
    _opt_out(tenant, "back@x.ru", from_list=False)  # then unsubscribed from everything
    result = tenant.apply(state(1, "back@x.ru", at=102))
    assert result.unsubscribed == 1 and tenant.resubscribe_attempts() == []
    assert tenant.member("back@x.ru")["state"] == "unsubscribed"  # type: ignore[index]
    assert _list_status(tenant, "back@x.ru") is None


def test_a_subscribed_address_is_still_excluded_and_readded(tenant: Tenant) -> None:
    tenant.apply(state(1, "plain@x.ru"))
    tenant.apply(state(1, deleted=True, at=101))
    assert _list_status(tenant, "plain@x.ru") is None
    tenant.apply(state(1, "plain@x.ru", at=102))
    assert _list_status(tenant, "plain@x.ru") == "active"
