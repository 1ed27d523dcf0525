"""amoCRM 429 and 403 as the service means them (issue 12): pauses and blocks that self-heal.

A 403 is a block of our egress IP (or of one account), never an account status: traffic stops
(one probe on a growing interval), an alert says what to tell support, and every account resumes
by itself once a probe gets through. Nothing is lost: the jobs wait in the queue meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import shared.consumers.full_sync as fullsync
from shared import sync_runs
from shared.accounts import get_account
from shared.blocks import list_holds
from shared.consumers.contact_events import handle_event_batch
from shared.db import get_database
from shared.jobqueue import Consumer, ConsumerOptions, Delivery, RetryBudget, get_queue
from shared.jobs import ContactEvent, ContactEventsJob, FullSyncJob
from shared.settings import get_settings
from shared.status import collect_status, render_status_page
from tests.conftest import reset_caches
from tests.integration.test_fullsync import (  # noqa: F401
    Connected,
    Sandboxes,
    connect,
    env,
    servers,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fast_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMOCRM_BLOCK_PROBE_SECONDS", "1")
    monkeypatch.setenv("AMOCRM_BLOCK_PROBE_MAX_SECONDS", "2")
    reset_caches()


@pytest.fixture
def faults(env: Sandboxes) -> Iterator[Any]:  # noqa: F811
    def add(**fault: Any) -> None:
        requests.post(f"{env.amo_url}/_sandbox/faults", json=fault, timeout=5).raise_for_status()

    yield add
    requests.delete(f"{env.amo_url}/_sandbox/faults", timeout=5)


def block_account(env: Sandboxes, account_id: int, blocked: bool) -> None:  # noqa: F811
    resp = requests.patch(
        f"{env.amo_url}/_sandbox/accounts/{account_id}", json={"blocked": blocked}, timeout=5
    )
    assert resp.status_code == 200


def sent_by(env: Sandboxes, account_id: int) -> list[dict[str, Any]]:  # noqa: F811
    return [e for e in env.world.request_log if e["account_id"] == account_id]


def run_job(account_id: int) -> tuple[int, Delivery[FullSyncJob]]:
    run_id, _ = sync_runs.start_sync_run(get_database(), account_id, kind="full", requested_by="t")
    return run_id, Delivery(
        job_id=1, job=FullSyncJob(account_id=account_id, run_id=run_id), attempts=1
    )


def again(delivery: Delivery[FullSyncJob]) -> Delivery[FullSyncJob]:
    return Delivery(job_id=1, job=delivery.job, attempts=delivery.attempts + 1, age=3600 * 24)


def run_status(run_id: int) -> str:
    row = sync_runs.get_sync_run(get_database(), run_id)
    assert row is not None
    return str(row["status"])


def test_a_403_holds_the_egress_then_only_the_blocked_account_until_it_lifts(
    env: Sandboxes,  # noqa: F811
    fast_probes: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocked, other = connect(env, contacts=2), connect(env, contacts=2)
    db = get_database()
    block_account(env, blocked.account_id, True)

    run_a, job_a = run_job(blocked.account_id)
    with caplog.at_level("ERROR", logger="shared.blocks"):
        fullsync.handle_sync_batch([job_a])
    # Deferred, not failed: the job waits for the next probe without spending its budget.
    assert (job_a.outcome, job_a.deferred) == ("retry", True)
    assert job_a.delay is not None and 1 <= job_a.delay <= 2
    assert run_status(run_a) != "failed"
    assert get_account(db, blocked.account_id).status == "active"  # type: ignore[union-attr]
    (hold,) = list_holds(db)
    assert hold.is_egress and hold.account_id == blocked.account_id
    alerts = [r for r in caplog.records if getattr(r, "event", None) == "amocrm_ip_blocked"]
    assert len(alerts) == 1 and "support" in alerts[0].tell_support  # type: ignore[attr-defined]

    # The whole egress is held: another account's work is not even sent.
    env.world.request_log.clear()
    run_b, job_b = run_job(other.account_id)
    fullsync.handle_sync_batch([job_b])
    assert (job_b.outcome, job_b.deferred) == ("retry", True)
    assert sent_by(env, other.account_id) == []
    # The status page carries the alert with what to tell amoCRM support.
    page = render_status_page(collect_status(db))
    assert "amoCRM blocks" in page and "X-Request-Id" in page

    # The probe is due: the other account gets through, so the block was the first account's.
    time.sleep(1.1)
    job_b = again(job_b)
    fullsync.handle_sync_batch([job_b])
    assert job_b.outcome is None and run_status(run_b) == "done"
    (hold,) = list_holds(db)
    assert not hold.is_egress and hold.account_id == blocked.account_id

    # The blocked account probes (one cheap request) and keeps waiting, still active.
    env.world.request_log.clear()
    job_a = again(job_a)
    fullsync.handle_sync_batch([job_a])
    assert (job_a.outcome, job_a.deferred) == ("retry", True)
    assert [(e["method"], e["path"], e["status"]) for e in sent_by(env, blocked.account_id)] == [
        ("GET", "/api/v4/account", 403)
    ]
    assert get_account(db, blocked.account_id).status == "active"  # type: ignore[union-attr]

    # amoCRM lifts the block: the next probe succeeds and the run finishes, nobody re-authorized.
    block_account(env, blocked.account_id, False)
    time.sleep(2.1)
    job_a = again(job_a)
    fullsync.handle_sync_batch([job_a])
    assert job_a.outcome is None and run_status(run_a) == "done"
    assert list_holds(db) == []
    assert blocked.list_emails() == {f"p{n}.{blocked.account_id}@example.com" for n in range(2)}


def test_an_ip_ban_with_an_html_403_heals_by_itself_and_loses_nothing(
    env: Sandboxes,  # noqa: F811
    fast_probes: None,
    faults: Any,
) -> None:
    """The issue's 'done when': a ban of N seconds, every account resumes on its own."""
    accounts = [connect(env, contacts=3) for _ in range(3)]
    db = get_database()
    queue = get_queue()
    # Restores are read back from amoCRM, so contact events need it too.
    restores = {}
    for acc in accounts:
        contact = env.world.apply_entity(
            env.world.account(acc.account_id),
            {"name": "Restored", "emails": [f"back.{acc.account_id}@example.com"]},
            kind="contact",
        )
        restores[acc.account_id] = f"back.{acc.account_id}@example.com"
        event = ContactEvent(action="restore", contact_id=contact.id, updated_at=int(time.time()))
        job = ContactEventsJob(account_id=acc.account_id, events=[event], received_at=time.time())
        queue.put(job)
    runs = []
    for acc in accounts:
        run_id, _ = sync_runs.start_sync_run(db, acc.account_id, kind="full", requested_by="t")
        queue.put(FullSyncJob(account_id=acc.account_id, run_id=run_id))
        runs.append(run_id)

    faults(status=403, count=100_000, html=True)  # the ban: nginx's page for every API call
    env.world.request_log.clear()
    options = ConsumerOptions(budget=RetryBudget.from_settings())
    consumers = [
        Consumer(queue, FullSyncJob, fullsync.handle_sync_batch, options=options),
        Consumer(queue, ContactEventsJob, handle_event_batch, options=options),
    ]
    threads = [threading.Thread(target=c.run, kwargs={"idle_exit_seconds": 6}) for c in consumers]
    for t in threads:
        t.start()
    try:
        time.sleep(5)
        # During the ban: held, not blocked or re-authorized; only probes reach amoCRM.
        assert {get_account(db, a.account_id).status for a in accounts} == {"active"}  # type: ignore[union-attr]
        holds = list_holds(db)
        assert len(holds) == 1 and holds[0].is_egress and holds[0].probes >= 1
        during_ban = [e for e in env.world.request_log if e["path"].startswith("/api/v4")]
        # The first requests in flight meet the 403, then one probe per interval (1 s, 2 s, …).
        assert len(during_ban) <= 12, during_ban
        assert all(e["status"] == 403 for e in during_ban)
        assert (
            sum(
                q["current-jobs-buried"]
                for q in (queue.tube_stats(t) for t in ("full-sync", "contact-events"))
            )
            == 0
        )
    finally:
        requests.delete(f"{env.amo_url}/_sandbox/faults", timeout=5)  # the ban lifts
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    assert [run_status(r) for r in runs] == ["done"] * 3
    assert list_holds(db) == []
    for acc in accounts:
        account = get_account(db, acc.account_id)
        assert account is not None and account.status == "active"
        expected = {f"p{n}.{acc.account_id}@example.com" for n in range(3)} | {
            restores[acc.account_id]
        }
        assert acc.list_emails() == expected
    for tube in ("full-sync", "contact-events"):
        stats = queue.tube_stats(tube)
        assert stats["current-jobs-buried"] == stats["current-jobs-ready"] == 0
        assert stats["current-jobs-delayed"] == 0


def test_a_429_slows_the_egress_for_the_time_it_asks_and_never_stops_the_account(
    env: Sandboxes,  # noqa: F811
    faults: Any,
) -> None:
    acc, neighbour = connect(env, contacts=1), connect(env, contacts=1)
    # More than the client waits out in-process: the job is rescheduled after retry_after.
    faults(status=429, count=1, retry_after=120, path_prefix="/api/v4/contacts")
    run_id, job = run_job(acc.account_id)
    fullsync.handle_sync_batch([job])
    assert (job.outcome, job.delay, job.deferred) == ("retry", 120, True)
    assert run_status(run_id) != "failed"
    assert get_account(get_database(), acc.account_id).status == "active"  # type: ignore[union-attr]
    # The pause is the egress's: the neighbour's next request waits for the same slot.
    row = get_database().fetch_one(
        "SELECT next_slot - UNIX_TIMESTAMP(NOW(6)) AS ahead FROM amo_rate_slots "
        "WHERE account_key = %s",
        (f"egress:{get_settings().egress_id}",),
    )
    assert row is not None and float(row["ahead"]) > 100
    assert neighbour.account_id != acc.account_id


def test_the_account_that_earned_the_hold_probes_last_but_still_probes(
    env: Sandboxes,  # noqa: F811
    fast_probes: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shared.blocks.PROBE_LEASE_SECONDS", 1)
    alone = connect(env, contacts=1)
    block_account(env, alone.account_id, True)
    run_id, job = run_job(alone.account_id)
    fullsync.handle_sync_batch([job])
    assert (job.outcome, job.deferred) == ("retry", True)

    # Its probe is due, but another account's probe would tell more: it leaves it a moment.
    time.sleep(1.1)
    env.world.request_log.clear()
    job = again(job)
    fullsync.handle_sync_batch([job])
    assert job.outcome == "retry" and sent_by(env, alone.account_id) == []
    # Nobody else came: it probes itself (one cheap request), and still waits.
    time.sleep(1.1)
    job = again(job)
    fullsync.handle_sync_batch([job])
    assert job.outcome == "retry"
    assert [(e["path"], e["status"]) for e in sent_by(env, alone.account_id)] == [
        ("/api/v4/account", 403)
    ]
    block_account(env, alone.account_id, False)
    time.sleep(3.2)  # the doubled interval, then the lease
    job = again(job)
    fullsync.handle_sync_batch([job])
    assert job.outcome is None and run_status(run_id) == "done"
    assert list_holds(get_database()) == []
