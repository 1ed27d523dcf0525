"""Full and incremental sync runs against real MySQL/beanstalkd and both emulators in-thread."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import pytest
from werkzeug.serving import make_server

import shared.consumers.full_sync as fullsync
from sandbox.amocrm import SandboxConfig as AmoConfig
from sandbox.amocrm import create_app as create_amo
from sandbox.amocrm.state import World
from sandbox.unisender import SandboxConfig as UniConfig
from sandbox.unisender import create_app as create_uni
from shared import sync_runs
from shared.accounts import get_account, mark_account_status
from shared.clock import utcnow
from shared.db import Database, get_database
from shared.jobqueue import Consumer, ConsumerOptions, Delivery, RetryBudget, get_queue
from shared.jobs import FullSyncJob
from shared.prefetch import PREFETCH_PAGES
from shared.settings import get_settings
from shared.unisender.client import UnisenderClient
from shared.unisender_link import save_unisender_link
from testing.caches import reset_caches
from tests.integration.test_tokens import install_from_widget

pytestmark = pytest.mark.integration


def _serve(app: Any) -> tuple[str, Any]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    return f"http://127.0.0.1:{server.server_port}", server


@dataclass
class Sandboxes:
    amo_url: str
    world: World
    uni_url: str

    def page_requests(self, account_id: int) -> list[dict[str, Any]]:
        return [
            e
            for e in self.world.request_log
            if e["path"] == "/api/v4/contacts" and e["account_id"] == account_id
        ]


@pytest.fixture(scope="module")
def servers(base_env: dict[str, str]) -> Iterator[Sandboxes]:
    amo_app = create_amo(
        AmoConfig(
            client_id=base_env["AMOCRM_CLIENT_ID"],
            client_secret=base_env["AMOCRM_CLIENT_SECRET"],
            redirect_uri=base_env["AMOCRM_REDIRECT_URI"],
            seed_accounts=0,
        )
    )
    # Account ids of its own (as tests/integration/test_tokens.py does): the session's e2e stack
    # runs another sandbox with the default id sequence in the same database, and a reconcile
    # here would pick up its contacts.
    amo_app.config["WORLD"]._account_ids = itertools.count(
        1_800_000_000 + secrets.randbelow(10**8), 7919
    )
    uni_app = create_uni(UniConfig())
    amo_url, amo_server = _serve(amo_app)
    uni_url, uni_server = _serve(uni_app)
    yield Sandboxes(amo_url, amo_app.config["WORLD"], uni_url)
    amo_server.shutdown()
    uni_server.shutdown()


@pytest.fixture
def env(
    servers: Sandboxes, monkeypatch: pytest.MonkeyPatch, db: Database, beanstalkd: Any
) -> Iterator[Sandboxes]:
    monkeypatch.setenv("AMOCRM_API_URL", servers.amo_url)
    monkeypatch.setenv("AMOCRM_AUTH_URL", f"{servers.amo_url}/oauth")
    monkeypatch.setenv("UNISENDER_API_URL", f"{servers.uni_url}/en/api")
    # An egress of this test's own: a 403 hold (shared.blocks) stays with the test that earned it.
    egress = f"t{secrets.token_hex(6)}"
    monkeypatch.setenv("EGRESS_ID", egress)
    reset_caches()
    first_run = int((db.fetch_one("SELECT COALESCE(MAX(id), 0) AS n FROM sync_runs") or {})["n"])
    yield servers
    # Emulators number accounts the same way in every process, so the e2e stack's sandbox hands
    # out these very ids again: forget our accounts, and end the runs whose jobs went to this
    # test's private tube (reconciles queue one for every account in the database).
    database = get_database()
    database.execute(
        "UPDATE sync_runs SET status = 'failed', error = 'test cleanup' "
        "WHERE id > %s AND status IN ('queued', 'running')",
        (first_run,),
    )
    ids = [a.id for a in servers.world.accounts.values()]
    database.execute("DELETE FROM amo_holds WHERE hold_key = %s", (f"egress:{egress}",))
    if ids:
        database.execute(
            f"DELETE FROM accounts WHERE id IN ({', '.join(['%s'] * len(ids))})",  # noqa: S608
            ids,
        )
        database.execute(
            f"DELETE FROM amo_holds WHERE account_id IN ({', '.join(['%s'] * len(ids))})",  # noqa: S608
            ids,
        )


@dataclass
class Connected:
    account_id: int
    api_key: str
    list_id: int
    uni: UnisenderClient

    def list_emails(self) -> set[str]:
        """Addresses in the account's list, read back from the emulator via the API."""
        # The control API gives the whole key state; we only look at list membership.
        import requests

        base = get_settings().unisender_api_url.rsplit("/en/api", 1)[0]
        state = requests.get(f"{base}/_sandbox/keys/{self.api_key}", timeout=5).json()
        return {
            c["email"]
            for c in state["contacts"]
            if any(m["id"] == self.list_id and m["status"] == "active" for m in c["lists"])
        }

    def import_calls(self) -> list[dict[str, Any]]:
        import requests

        base = get_settings().unisender_api_url.rsplit("/en/api", 1)[0]
        calls = requests.get(
            f"{base}/_sandbox/keys/{self.api_key}/calls",
            params={"method": "importContacts"},
            timeout=5,
        ).json()
        return list(calls["log"])


def connect(env: Sandboxes, contacts: int = 0) -> Connected:
    """An installed amoCRM account with `contacts` contacts and a connected Unisender list."""
    account = env.world.create_account()
    for n in range(contacts):
        env.world.apply_entity(
            account, {"name": f"Person {n}", "emails": [f"p{n}.{account.id}@example.com"]}
        )
    db = get_database()
    install_from_widget(env.world, account)
    import requests

    key = requests.post(f"{env.uni_url}/_sandbox/keys", json={}, timeout=5).json()["api_key"]
    uni = UnisenderClient(key, base_url=f"{env.uni_url}/en/api")
    list_id = uni.ensure_list(f"amoCRM {account.id}")
    save_unisender_link(db, account.id, api_key=key, list_id=list_id, list_title="t")
    return Connected(account.id, key, list_id, uni)


def run_sync(account_id: int, *, kind: str = "full") -> dict[str, Any]:
    db = get_database()
    run_id, _ = sync_runs.start_sync_run(db, account_id, kind=kind, requested_by="test")  # type: ignore[arg-type]
    job = FullSyncJob(account_id=account_id, run_id=run_id, mode=kind)  # type: ignore[arg-type]
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=1)])
    row = sync_runs.get_sync_run(db, run_id)
    assert row is not None
    return row


def test_full_sync_streams_pages_into_500_row_imports(env: Sandboxes) -> None:
    acc = connect(env, contacts=1201)
    applied_after_pages: list[tuple[int, int]] = []
    real_apply = fullsync.apply_contact_states

    def spy(*args: Any, **kwargs: Any) -> Any:
        states = list(kwargs["states"])
        applied_after_pages.append((len(env.page_requests(acc.account_id)), len(states)))
        return real_apply(*args, **{**kwargs, "states": states})

    fullsync.apply_contact_states = spy  # type: ignore[assignment]
    try:
        run = run_sync(acc.account_id)
    finally:
        fullsync.apply_contact_states = real_apply  # type: ignore[assignment]

    assert run["status"] == "done", run["error"]
    assert len(env.page_requests(acc.account_id)) == 5
    assert [c["rows"] for c in acc.import_calls()] == [500, 500, 201]
    # Pipelined: the first import went out after two pages (and the pages read ahead of them),
    # not after the whole account.
    first_pages, first_rows = applied_after_pages[0]
    assert 2 <= first_pages <= 2 + PREFETCH_PAGES < 5 and first_rows == 500
    assert (run["pages_read"], run["contacts_seen"], run["rows_imported"]) == (5, 1201, 1201)
    assert (run["import_calls"], run["checkpoint_page"], run["emails_excluded"]) == (3, 5, 0)
    assert len(acc.list_emails()) == 1201
    assert env.world.stats(account_id=acc.account_id)["max_per_second"] <= 7

    again = run_sync(acc.account_id)
    assert again["status"] == "done"
    assert (again["rows_imported"], again["import_calls"]) == (0, 0)
    assert len(acc.import_calls()) == 3


def test_reconcile_excludes_contacts_deleted_while_webhooks_were_lost(env: Sandboxes) -> None:
    acc = connect(env, contacts=6)
    account = env.world.account(acc.account_id)
    ids = sorted(e.id for e in account.entities.values())
    shared_email = f"p0.{acc.account_id}@example.com"
    env.world.update_entity(
        account, ids[5], {"emails": [f"p5.{acc.account_id}@example.com", shared_email]}
    )
    assert run_sync(acc.account_id)["status"] == "done"
    # Deleted in amoCRM, no webhook reached us: contact 0 shares its address with contact 5.
    for contact_id in ids[:3]:
        env.world.set_deleted(account, contact_id, True)
    run = run_sync(acc.account_id)
    assert run["status"] == "done", run["error"]
    assert run["emails_excluded"] == 2
    assert acc.list_emails() == {
        shared_email,
        *(f"p{n}.{acc.account_id}@example.com" for n in (3, 4, 5)),
    }
    gone = get_database().fetch_all(
        "SELECT contact_id FROM contacts WHERE account_id = %s AND is_deleted = 1",
        (acc.account_id,),
    )
    assert sorted(int(r["contact_id"]) for r in gone) == ids[:3]


def test_crashed_run_resumes_from_its_checkpoint(env: Sandboxes) -> None:
    acc = connect(env, contacts=1100)
    real_apply = fullsync.apply_contact_states
    calls = 0

    class Crash(BaseException):
        """Stands in for a SIGKILL between two batches."""

    def crashing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Crash
        return real_apply(*args, **kwargs)

    db = get_database()
    run_id, _ = sync_runs.start_sync_run(db, acc.account_id, kind="full", requested_by="test")
    job = FullSyncJob(account_id=acc.account_id, run_id=run_id)
    fullsync.apply_contact_states = crashing  # type: ignore[assignment]
    try:
        with pytest.raises(Crash):
            fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=1)])
    finally:
        fullsync.apply_contact_states = real_apply  # type: ignore[assignment]
    crashed = sync_runs.get_sync_run(db, run_id)
    assert crashed is not None
    assert (crashed["status"], crashed["checkpoint_page"], crashed["rows_imported"]) == (
        "running",
        2,
        500,
    )
    env.world.request_log.clear()
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=2)])
    run = sync_runs.get_sync_run(db, run_id)
    assert run is not None and run["status"] == "done", run
    # Pages 3, 4, 5 (a 429 retry may repeat one): never page 1 or 2 again.
    pages = [e["query"] for e in env.page_requests(acc.account_id) if e["status"] == 200]
    assert "page=3" in pages[0] and len(pages) == 3
    assert (run["pages_read"], run["contacts_seen"], run["rows_imported"]) == (5, 1100, 1100)
    assert len(acc.list_emails()) == 1100


def test_incremental_reconcile_uses_the_watermark(env: Sandboxes) -> None:
    acc = connect(env, contacts=3)
    assert run_sync(acc.account_id)["status"] == "done"
    account = env.world.account(acc.account_id)
    first = min(account.entities)
    later = max(e.updated_at for e in account.entities.values()) + 120
    env.world.update_entity(
        account, first, {"emails": ["changed@example.com"], "updated_at": later}
    )
    env.world.request_log.clear()
    db = get_database()
    sync_runs.enqueue_reconciles(mode="incremental")
    run = sync_runs.latest_sync_run(db, acc.account_id)
    assert run is not None and (run["kind"], run["status"]) == ("incremental", "queued")
    job = _take_job(run["id"])
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=1)])
    run = sync_runs.get_sync_run(db, run["id"])
    assert run is not None and run["status"] == "done", run
    # The watermark overlap re-reads the other two; only the changed one costs a row.
    assert (run["contacts_seen"], run["rows_imported"], run["emails_excluded"]) == (3, 1, 1)
    assert run["watermark"] == later
    assert "changed@example.com" in acc.list_emails()
    assert f"p0.{acc.account_id}@example.com" not in acc.list_emails()
    queries = [e["query"] for e in env.page_requests(acc.account_id)]
    assert len(queries) == 1 and "order%5Bupdated_at%5D=desc" in queries[0]


def _take_job(run_id: int) -> FullSyncJob:
    client = get_queue().connect(watch=FullSyncJob.tube)
    try:
        while True:
            raw = client.reserve(timeout=2)
            client.delete(raw)
            job = FullSyncJob.model_validate_json(raw.body)
            if job.run_id == run_id:
                return job
    finally:
        client.close()


def test_one_active_run_per_account_and_inactive_accounts_are_skipped(env: Sandboxes) -> None:
    acc = connect(env, contacts=1)
    db = get_database()
    first = sync_runs.request_sync(db, acc.account_id, requested_by="test")
    second = sync_runs.request_sync(db, acc.account_id, requested_by="test")
    assert first.created and not second.created and first.run_id == second.run_id
    # A run nobody moved for longer than the stale window no longer blocks the account.
    db.execute(
        "UPDATE sync_runs SET updated_at = updated_at - INTERVAL 2 DAY WHERE id = %s",
        (first.run_id,),
    )
    third = sync_runs.request_sync(db, acc.account_id, requested_by="test")
    assert third.created and third.run_id != first.run_id
    abandoned = sync_runs.get_sync_run(db, first.run_id)
    assert abandoned is not None and abandoned["status"] == "failed"

    mark_account_status(db, acc.account_id, "reauth_required", "test")
    job = FullSyncJob(account_id=acc.account_id, run_id=third.run_id)
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=1)])
    run = sync_runs.get_sync_run(db, third.run_id)
    assert run is not None and run["status"] == "skipped"
    assert sync_runs.enqueue_reconciles(mode="full") >= 0
    assert sync_runs.latest_sync_run(db, acc.account_id)["id"] == third.run_id  # type: ignore[index]


def _reconcile_runs(account_id: int) -> list[int]:
    rows = get_database().fetch_all(
        "SELECT id FROM sync_runs WHERE account_id = %s AND requested_by = 'scheduler'",
        (account_id,),
    )
    return [int(r["id"]) for r in rows]


def test_401_that_survives_a_refresh_marks_the_account_reauth_required(
    env: Sandboxes,
) -> None:
    import requests

    acc = connect(env, contacts=1)
    db = get_database()
    # Both the first call and its retry after a successful refresh are refused.
    requests.post(
        f"{env.amo_url}/_sandbox/faults",
        json={"status": 401, "count": 2, "path_prefix": "/api/v4/contacts"},
        timeout=5,
    )
    try:
        run = run_sync(acc.account_id)
    finally:
        requests.delete(f"{env.amo_url}/_sandbox/faults", timeout=5)
    assert run["status"] == "failed" and "Unauthorized" in run["error"]
    account = get_account(db, acc.account_id)
    assert account is not None and account.status == "reauth_required"
    assert sync_runs.enqueue_reconciles(mode="full") >= 0
    assert _reconcile_runs(acc.account_id) == []


def test_two_consumers_one_run(env: Sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose TTR ran out mid-batch is handed to a second consumer: it must not run too."""
    acc = connect(env, contacts=600)
    db = get_database()
    inside, proceed = threading.Event(), threading.Event()
    real_apply = fullsync.apply_contact_states

    def held_apply(*args: Any, **kwargs: Any) -> Any:
        if not inside.is_set():
            inside.set()
            assert proceed.wait(30)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(fullsync, "apply_contact_states", held_apply)
    run_id, _ = sync_runs.start_sync_run(db, acc.account_id, kind="full", requested_by="test")
    job = FullSyncJob(account_id=acc.account_id, run_id=run_id)
    first, second = (Delivery(job_id=1, job=job, attempts=n) for n in (1, 2))
    runner = threading.Thread(target=fullsync.handle_sync_batch, args=([first],), daemon=True)
    runner.start()
    try:
        assert inside.wait(30)
        # The first runner's reader goes on to the last page while its first import is held.
        deadline = time.monotonic() + 10
        while len(env.page_requests(acc.account_id)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        pages = len(env.page_requests(acc.account_id))
        fullsync.handle_sync_batch([second])
        # Put back for later, nothing read, nothing recorded as the run's error.
        assert (second.outcome, second.delay) == ("retry", 60)
        assert len(env.page_requests(acc.account_id)) == pages
        busy = sync_runs.get_sync_run(db, run_id)
        assert busy is not None and (busy["status"], busy["error"]) == ("running", None)
    finally:
        proceed.set()
        runner.join(30)
    run = sync_runs.get_sync_run(db, run_id)
    assert run is not None and run["status"] == "done", run
    assert first.outcome is None
    assert len(env.page_requests(acc.account_id)) == 3
    assert (run["pages_read"], run["contacts_seen"], run["rows_imported"]) == (3, 600, 600)
    assert run["import_calls"] == 2 and len(acc.import_calls()) == 2
    # When the put-back job returns, the run is finished: it is simply deleted.
    third = Delivery(job_id=1, job=job, attempts=3)
    fullsync.handle_sync_batch([third])
    assert third.outcome is None and len(env.page_requests(acc.account_id)) == 3


def test_runner_that_lost_its_reservation_finishes_the_run(env: Sandboxes) -> None:
    import greenstalk

    class TakenAway:
        """beanstalkd's answer to a touch once the TTR ran out and the job went elsewhere."""

        def touch(self, job: Any) -> None:
            raise greenstalk.NotFoundError("NOT_FOUND")

    acc = connect(env, contacts=3)
    db = get_database()
    run_id, _ = sync_runs.start_sync_run(db, acc.account_id, kind="full", requested_by="test")
    job = FullSyncJob(account_id=acc.account_id, run_id=run_id)
    delivery = Delivery(job_id=1, job=job, attempts=1, _client=TakenAway())  # type: ignore[arg-type]
    fullsync.handle_sync_batch([delivery])
    run = sync_runs.get_sync_run(db, run_id)
    assert run is not None and run["status"] == "done" and run["contacts_seen"] == 3


def _failing_run(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def execute_run(*args: Any, **kwargs: Any) -> None:
        raise exc

    monkeypatch.setattr(fullsync, "execute_run", execute_run)


def _queued_run(env: Sandboxes) -> tuple[int, FullSyncJob]:
    acc = connect(env, contacts=1)
    run_id, _ = sync_runs.start_sync_run(
        get_database(), acc.account_id, kind="full", requested_by="test"
    )
    return run_id, FullSyncJob(account_id=acc.account_id, run_id=run_id)


def test_a_transient_failure_fails_the_run_when_the_queue_gives_up_on_its_job(
    env: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's give-up follows the queue's retry budget, not a count of attempts."""
    budget = get_settings().job_retry_budget_seconds
    run_id, job = _queued_run(env)
    _failing_run(monkeypatch, fullsync.RetryJob("Unisender: Transient: down", delay=30))
    many = get_settings().job_max_attempts + 5
    within = Delivery(job_id=1, job=job, attempts=many, age=budget - 30)
    fullsync.handle_sync_batch([within])
    run = sync_runs.get_sync_run(get_database(), run_id)
    assert run is not None and run["status"] == "queued" and "down" in run["error"]
    assert (within.outcome, within.delay, within.transient) == ("retry", 30, True)

    beyond = Delivery(job_id=1, job=job, attempts=many + 1, age=budget - 29)
    fullsync.handle_sync_batch([beyond])
    run = sync_runs.get_sync_run(get_database(), run_id)
    assert run is not None and run["status"] == "failed"
    assert run["error"].startswith("gave up after") and "down" in run["error"]
    # The consumer agrees: with that delay the job is out of budget and gets buried.
    consumer = Consumer(
        get_queue(),
        FullSyncJob,
        fullsync.handle_sync_batch,
        options=ConsumerOptions(budget=RetryBudget(seconds=budget)),
    )
    assert consumer._may_retry(within) and not consumer._may_retry(beyond)


def test_a_backoff_chosen_by_the_handler_is_the_one_the_queue_applies(
    env: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, job = _queued_run(env)
    _failing_run(monkeypatch, fullsync.RetryJob("amoCRM: Transient: 502"))
    delivery = Delivery(job_id=1, job=job, attempts=3, age=10)
    fullsync.handle_sync_batch([delivery])
    settings = get_settings()
    ceiling = min(settings.job_backoff_max_seconds, settings.job_backoff_base_seconds * 4)
    assert delivery.outcome == "retry" and delivery.delay is not None
    assert max(1, int(ceiling / 2)) <= delivery.delay <= ceiling
    run = sync_runs.get_sync_run(get_database(), run_id)
    assert run is not None and run["status"] == "queued"


def test_an_unexpected_error_fails_the_run_with_the_last_attempt(
    env: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, job = _queued_run(env)
    _failing_run(monkeypatch, ZeroDivisionError("a bug"))
    last = get_settings().job_max_attempts
    early = Delivery(job_id=1, job=job, attempts=last - 1)
    fullsync.handle_sync_batch([early])
    assert (early.outcome, early.transient) == ("retry", False)
    run = sync_runs.get_sync_run(get_database(), run_id)
    assert run is not None and run["status"] == "queued" and "a bug" in run["error"]
    fullsync.handle_sync_batch([Delivery(job_id=1, job=job, attempts=last)])
    run = sync_runs.get_sync_run(get_database(), run_id)
    assert run is not None and run["status"] == "failed" and "ZeroDivisionError" in run["error"]


def test_long_applies_renew_the_jobs_reservation(
    env: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run hands its touch to apply_contact_states (called between Unisender calls)."""
    acc = connect(env, contacts=3)
    seen: list[Any] = []
    real_apply = fullsync.apply_contact_states

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("keep_alive"))
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(fullsync, "apply_contact_states", spy)
    touches: list[int] = []

    class Client:
        def touch(self, job: Any) -> None:
            touches.append(1)

    db = get_database()
    run_id, _ = sync_runs.start_sync_run(db, acc.account_id, kind="full", requested_by="test")
    job = FullSyncJob(account_id=acc.account_id, run_id=run_id)
    delivery = Delivery(job_id=1, job=job, attempts=1, _client=Client())  # type: ignore[arg-type]
    fullsync.handle_sync_batch([delivery])
    assert seen and all(callable(k) for k in seen)
    before = len(touches)
    seen[0]()
    assert len(touches) == before + 1


def test_scheduled_reconciles_leave_out_a_paused_account_until_its_pause_ends(
    env: Sandboxes,
) -> None:
    acc = connect(env, contacts=1)
    db = get_database()
    assert run_sync(acc.account_id)["status"] == "done"
    db.execute(
        "UPDATE accounts SET paused_until = %s WHERE id = %s",
        (utcnow() + timedelta(hours=6), acc.account_id),
    )
    sync_runs.enqueue_reconciles(mode="incremental")
    assert _reconcile_runs(acc.account_id) == []
    # A run asked for by hand still goes.
    assert run_sync(acc.account_id)["status"] == "done"
    db.execute(
        "UPDATE accounts SET paused_until = %s WHERE id = %s",
        (utcnow() - timedelta(seconds=1), acc.account_id),
    )
    sync_runs.enqueue_reconciles(mode="incremental")
    assert len(_reconcile_runs(acc.account_id)) == 1


def _run_due(account_id: int, now: Any) -> str | None:
    """One scheduler tick at `now`; runs the account's queued run, returns its kind (or None)."""
    db = get_database()
    before = sync_runs.latest_sync_run(db, account_id)
    # Only this account: other tests' accounts share the database (and the e2e stack runs them).
    sync_runs.enqueue_due_reconciles(now=now, account_ids=[account_id])
    run = sync_runs.latest_sync_run(db, account_id)
    assert run is not None and before is not None
    if run["id"] == before["id"]:
        return None
    fullsync.handle_sync_batch([Delivery(job_id=1, job=_take_job(run["id"]), attempts=1)])
    return str(run["kind"])


def test_planned_reconciles_poll_lost_webhooks_often_healthy_ones_rarely(env: Sandboxes) -> None:
    from shared.planner import PlannerConfig, make_plan

    acc = connect(env, contacts=2)
    assert run_sync(acc.account_id)["status"] == "done"
    # The scheduler's clock starts a minute after the account's daily full-reconcile slot, and
    # its full run is dated then: no full falls due in the hours this test looks at.
    plan = make_plan([], PlannerConfig.from_settings(get_settings()))
    now = utcnow().replace(tzinfo=UTC)
    start = plan.last_full_slot(acc.account_id, now) + timedelta(days=1, minutes=1)
    get_database().execute(
        "UPDATE sync_runs SET created_at = %s WHERE account_id = %s",
        (start.replace(tzinfo=None), acc.account_id),
    )
    # Just after a full run nothing is due.
    assert _run_due(acc.account_id, start) is None
    # No webhook event ever arrived: its webhooks may be lost, so it is polled after 15 minutes.
    assert _run_due(acc.account_id, start + timedelta(minutes=16)) == "incremental"
    get_database().execute(
        "UPDATE sync_runs SET created_at = %s WHERE account_id = %s AND kind = 'incremental'",
        ((start + timedelta(minutes=16)).replace(tzinfo=None), acc.account_id),
    )
    # Webhook events arrive: it is healthy now, and 17 more minutes are not enough any more…
    get_database().execute(
        "INSERT INTO event_minutes (account_id, minute, events) VALUES (%s, %s, 1)",
        (acc.account_id, utcnow().replace(second=0, microsecond=0)),
    )
    assert _run_due(acc.account_id, start + timedelta(minutes=33)) is None
    # …its polls come every RECONCILE_HEALTHY_INTERVAL_MINUTES (6 hours).
    assert _run_due(acc.account_id, start + timedelta(hours=6, minutes=20)) == "incremental"


def test_planned_full_reconcile_comes_once_a_day_at_the_accounts_own_slot(env: Sandboxes) -> None:
    from shared.planner import PlannerConfig, make_plan

    acc = connect(env, contacts=2)
    assert run_sync(acc.account_id)["status"] == "done"
    plan = make_plan([], PlannerConfig.from_settings(get_settings()))
    now = utcnow().replace(tzinfo=UTC)
    slot = plan.last_full_slot(acc.account_id, now) + timedelta(days=1)

    def runs_were_at(when: Any) -> None:
        get_database().execute(
            "UPDATE sync_runs SET created_at = %s WHERE account_id = %s",
            (when.replace(tzinfo=None), acc.account_id),
        )

    # Its last full ran two hours before its slot: a minute before the slot only a poll is due…
    runs_were_at(slot - timedelta(hours=2))
    assert _run_due(acc.account_id, slot - timedelta(minutes=1)) == "incremental"
    runs_were_at(slot - timedelta(minutes=1))
    # …a minute after it, the full reconcile; and once that ran, nothing more.
    assert _run_due(acc.account_id, slot + timedelta(minutes=1)) == "full"
    runs_were_at(slot + timedelta(minutes=1))
    assert _run_due(acc.account_id, slot + timedelta(minutes=2)) is None
