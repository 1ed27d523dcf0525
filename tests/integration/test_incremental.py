"""The contact-events consumer: grouping per account, newest event wins, drops, retry and bury."""

from __future__ import annotations

import time

import pytest
import requests

from shared.consumers.contact_events import handle_event_batch
from shared.db import Database
from shared.jobqueue import Delivery
from shared.jobs import ContactEvent, ContactEventsJob, EmailValue
from shared.unisender_link import save_unisender_link
from tests.integration.test_sync_apply import Tenant, make_tenant, uni_url  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def linked(db: Database, uni_url: str, monkeypatch: pytest.MonkeyPatch) -> Tenant:  # noqa: F811
    from tests.conftest import reset_caches

    monkeypatch.setenv("UNISENDER_API_URL", f"{uni_url}/en/api")
    reset_caches()
    tenant = make_tenant(db, uni_url)
    save_unisender_link(
        db, tenant.account_id, api_key=tenant.api_key, list_id=tenant.list_id, list_title="t"
    )
    return tenant


def event(action: str, cid: int, *emails: str, name: str = "N", at: int = 100) -> ContactEvent:
    values = None if action == "delete" else [EmailValue(value=e, enum_id=1) for e in emails]
    return ContactEvent(action=action, contact_id=cid, name=name, updated_at=at, emails=values)  # type: ignore[arg-type]


def deliveries(account_id: int, *groups: list[ContactEvent]) -> list[Delivery[ContactEventsJob]]:
    return [
        Delivery(
            job_id=n,
            job=ContactEventsJob(account_id=account_id, events=events, received_at=time.time()),
            attempts=1,
        )
        for n, events in enumerate(groups, start=1)
    ]


def test_a_batch_of_jobs_becomes_one_import(linked: Tenant, db: Database) -> None:
    batch = deliveries(
        linked.account_id,
        [event("add", 1, "a@x.ru"), event("add", 2, "b@x.ru"), event("add", 3, "c@x.ru")],
        [event("update", 1, "a2@x.ru", at=101), event("update", 2, " B@X.ru ", name="Bee", at=101)],
        [event("delete", 3, at=0)],
    )
    handle_event_batch(batch)
    assert all(d.outcome is None for d in batch)
    assert linked.in_list() == {"a2@x.ru", "b@x.ru"}
    assert linked.contacts()["b@x.ru"]["fields"]["Name"] == "Bee"
    assert linked.import_calls() == 1
    minutes = db.fetch_one(
        "SELECT SUM(events) AS n FROM event_minutes WHERE account_id = %s", (linked.account_id,)
    )
    assert minutes is not None and int(minutes["n"]) == 6


def test_an_older_event_later_in_the_queue_does_not_win(linked: Tenant) -> None:
    handle_event_batch(
        deliveries(
            linked.account_id,
            [event("update", 1, "new@x.ru", at=200)],
            [event("update", 1, "old@x.ru", at=100)],
        )
    )
    assert linked.in_list() == {"new@x.ru"}


def test_accounts_settle_independently(linked: Tenant, db: Database, uni_url: str) -> None:  # noqa: F811
    broken = make_tenant(db, uni_url)
    save_unisender_link(db, broken.account_id, api_key="no-such-key", list_id=1, list_title="t")
    batch = [
        *deliveries(linked.account_id, [event("add", 1, "ok@x.ru")]),
        *deliveries(broken.account_id, [event("add", 1, "ko@x.ru")]),
    ]
    handle_event_batch(batch)
    assert batch[0].outcome is None
    assert batch[1].outcome == "bury" and "API key" in batch[1].reason
    assert linked.in_list() == {"ok@x.ru"}


def test_unisender_outage_means_retry(linked: Tenant) -> None:
    fault = requests.post(
        f"{linked.base}/_sandbox/faults",
        json={"kind": "outage", "method": "importContacts", "api_key": linked.api_key},
        timeout=5,
    ).json()
    try:
        batch = deliveries(linked.account_id, [event("add", 1, "x@x.ru")])
        handle_event_batch(batch)
    finally:
        requests.delete(f"{linked.base}/_sandbox/faults/{fault['id']}", timeout=5)
    assert batch[0].outcome == "retry"
    handle_event_batch(batch := deliveries(linked.account_id, [event("add", 1, "x@x.ru")]))
    assert batch[0].outcome is None and linked.in_list() == {"x@x.ru"}


def test_events_without_a_link_or_of_a_disabled_account_are_dropped(
    db: Database,
    uni_url: str,  # noqa: F811
) -> None:
    tenant = make_tenant(db, uni_url)
    batch = deliveries(tenant.account_id, [event("add", 1, "a@x.ru")])
    handle_event_batch(batch)
    assert batch[0].outcome is None and tenant.in_list() == set()


def test_unknown_account_is_buried() -> None:
    batch = deliveries(987654321, [event("add", 1, "a@x.ru")])
    handle_event_batch(batch)
    assert batch[0].outcome == "bury"


def test_restricted_email_types_map_webhook_enum_ids(linked: Tenant, db: Database) -> None:
    db.execute("UPDATE accounts SET email_types = 'WORK' WHERE id = %s", (linked.account_id,))
    db.execute(
        "INSERT INTO amo_field_enums (account_id, enum_id, field_code, enum_code) VALUES "
        "(%s, 11, 'EMAIL', 'WORK'), (%s, 12, 'EMAIL', 'PRIV')",
        (linked.account_id, linked.account_id),
    )
    ev = ContactEvent(
        action="add",
        contact_id=1,
        name="T",
        updated_at=100,
        emails=[EmailValue(value="w@x.ru", enum_id=11), EmailValue(value="p@x.ru", enum_id=12)],
    )
    handle_event_batch(batch := deliveries(linked.account_id, [ev]))
    assert batch[0].outcome is None
    assert linked.in_list() == {"w@x.ru"}


def test_one_poison_job_is_buried_alone_and_its_batch_mates_are_applied(
    linked: Tenant, db: Database
) -> None:
    # An id past BIGINT (as queued before the intake bounded ids): MySQL refuses to store it.
    poison = ContactEvent.model_construct(
        action="add",
        contact_id=2**64,
        name="Too Big",
        updated_at=100,
        emails=[EmailValue(value="too.big@x.ru", enum_id=1)],
    )
    batch = deliveries(
        linked.account_id,
        [event("add", 1, "before@x.ru")],
        [poison],
        [event("add", 2, "after@x.ru")],
    )
    handle_event_batch(batch)
    assert [d.outcome for d in batch] == [None, "bury", None]
    assert "database refused" in batch[1].reason
    assert {"before@x.ru", "after@x.ru"} <= linked.in_list()
    stored = db.fetch_all(
        "SELECT contact_id FROM contacts WHERE account_id = %s ORDER BY contact_id",
        (linked.account_id,),
    )
    assert [int(r["contact_id"]) for r in stored] == [1, 2]


def test_an_account_wide_refusal_buries_the_jobs_without_one_by_one_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shared.consumers.contact_events as incremental
    from shared.unisender.errors import InvalidApiKey

    calls: list[int] = []

    def refuse(db: object, account_id: int, jobs: list[object], **_: object) -> None:
        calls.append(len(jobs))
        raise InvalidApiKey("Invalid API key", code="invalid_api_key", method="importContacts")

    monkeypatch.setattr(incremental, "apply_account_events", refuse)
    batch = deliveries(5, *([event("add", n, f"{n}@x.ru")] for n in range(1, 4)))
    handle_event_batch(batch)
    assert [d.outcome for d in batch] == ["bury"] * 3
    assert calls == [3]


def test_long_applies_touch_the_reserved_jobs(
    linked: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.consumers.contact_events as incremental

    monkeypatch.setattr(incremental, "TOUCH_INTERVAL_SECONDS", 0.0)
    handle_event_batch(
        deliveries(linked.account_id, [event("add", n, f"t{n}@x.ru") for n in range(1, 6)])
    )
    touched: list[int] = []
    batch = deliveries(linked.account_id, [event("delete", n, at=200) for n in range(1, 6)])
    for d in batch:
        monkeypatch.setattr(d, "touch", lambda d=d: touched.append(d.job_id))
    handle_event_batch(batch)
    assert batch[0].outcome is None and linked.in_list() == set()
    assert len(touched) >= 5  # one per exclude at least, each a Unisender call
