"""Full and incremental sync runs: one active run per account, streamed, checkpointed, resumable.

A full run reads the account's contacts page by page (250 per amoCRM request, at the account's
rate limit) and applies them through `shared.sync.apply_contact_states` as soon as 500 rows'
worth are buffered, so reading and writing are pipelined and memory holds at most a few pages.
After each applied batch the run stores the last page that is fully applied; a consumer that dies
is replaced by another that resumes from that page. At the end, contacts our state still holds but
this run never saw are confirmed with amoCRM and, when gone, applied as deleted (the shared-address
rule lives in apply_contact_states). An incremental run reads only contacts updated since the
account's watermark; it cannot see deletions, which the daily full run repairs.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import greenstalk

from shared.accounts import (
    AccountRow,
    get_account,
    reconcile_allowed_sql,
    record_amocrm_failure,
)
from shared.amocrm import errors as amo_errors
from shared.amocrm.client import MAX_PAGE, AmoCrmClient
from shared.amocrm.models import Contact
from shared.clock import iso_utc, utcnow
from shared.contacts import load_enum_codes
from shared.db import Database, Row, get_database
from shared.jobqueue import Delivery, QueueUnavailable, RetryJob, backoff_seconds, get_queue
from shared.jobs import FullSyncJob
from shared.settings import get_settings
from shared.sync import ApplyResult, ContactState, apply_contact_states, state_from_contact
from shared.tokens import amocrm_client_for
from shared.unisender import errors as uni_errors
from shared.unisender.client import UnisenderClient
from shared.unisender_link import UnisenderLink, get_unisender_link, unisender_client_for

log = logging.getLogger(__name__)

RunKind = Literal["full", "incremental"]

QUEUED, RUNNING, DONE, FAILED, SKIPPED = "queued", "running", "done", "failed", "skipped"
ACTIVE_STATUSES = (QUEUED, RUNNING)

IMPORT_BATCH_ROWS = 500  # Unisender's importContacts maximum
# Unseen contacts are confirmed one by one with amoCRM (a page shifted by a deletion during the
# run can hide a live contact); past this many the scan is trusted as it is, to stay far from
# amoCRM's "uncontrolled scans" blocking rule.
VERIFY_UNSEEN_MAX = 200
_UNSEEN_BATCH = 200
# A full run reads amoCRM pages in a thread of its own, this many ahead of the page being
# applied: the next request goes out at its rate-limit slot instead of after our processing and
# imports, and memory stays a few pages whatever the account's size.
PREFETCH_PAGES = 2
# While the reader waits that long for a page (a 429 pause, retries), the job's TTR is renewed.
_PREFETCH_TOUCH_SECONDS = 10.0
# How long a stopped reader may take to finish its request in flight before we go on without it.
_PREFETCH_JOIN_SECONDS = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class SyncRequest:
    """The answer to "sync this account": the run that will do it and whether it is new."""

    run_id: int
    status: str
    created: bool


def start_sync_run(
    db: Database, account_id: int, *, kind: RunKind, requested_by: str
) -> tuple[int, bool]:
    """Create a queued run unless the account already has an active one; (run_id, created).

    A run whose row has not moved for SYNC_RUN_STALE_MINUTES is declared abandoned (its job was
    lost) so the account is not blocked forever.
    """
    stale_before = utcnow() - timedelta(minutes=get_settings().sync_run_stale_minutes)
    with db.transaction() as cur:
        # The account row lock serializes concurrent requests for one account.
        cur.execute("SELECT id FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
        if cur.fetchone() is None:
            raise ValueError(f"no account {account_id}")
        cur.execute(
            "SELECT id, updated_at FROM sync_runs WHERE account_id = %s AND status IN (%s, %s) "
            "ORDER BY id DESC",
            (account_id, *ACTIVE_STATUSES),
        )
        for row in cur.fetchall():
            if row["updated_at"] >= stale_before:
                return int(row["id"]), False
            cur.execute(
                "UPDATE sync_runs SET status = %s, error = %s, finished_at = %s WHERE id = %s",
                (FAILED, "abandoned: no progress recorded", utcnow(), row["id"]),
            )
        cur.execute(
            "INSERT INTO sync_runs (account_id, kind, status, requested_by) "
            "VALUES (%s, %s, %s, %s)",
            (account_id, kind, QUEUED, requested_by[:64]),
        )
        return int(cur.lastrowid), True


def request_sync(
    db: Database, account_id: int, *, kind: RunKind = "full", requested_by: str
) -> SyncRequest:
    """Start (or join) the account's sync run and put its job on the queue."""
    run_id, created = start_sync_run(db, account_id, kind=kind, requested_by=requested_by)
    if created:
        try:
            get_queue().put(
                FullSyncJob(account_id=account_id, run_id=run_id, mode=kind),
                ttr=get_settings().full_sync_ttr_seconds,
            )
        except QueueUnavailable:
            _finish(db, run_id, FAILED, "could not queue the run: beanstalkd unavailable")
            raise
        log.info(
            "sync run queued",
            extra={"account_id": account_id, "run_id": run_id, "kind": kind, "by": requested_by},
        )
    run = get_sync_run(db, run_id)
    return SyncRequest(run_id=run_id, status=str(run["status"]) if run else QUEUED, created=created)


def get_sync_run(db: Database, run_id: int) -> Row | None:
    """One run row (counts, checkpoint, times)."""
    return db.fetch_one("SELECT * FROM sync_runs WHERE id = %s", (run_id,))


def latest_sync_run(db: Database, account_id: int) -> Row | None:
    """The account's newest run."""
    return db.fetch_one(
        "SELECT * FROM sync_runs WHERE account_id = %s ORDER BY id DESC LIMIT 1", (account_id,)
    )


def run_as_dict(row: Row) -> dict[str, Any]:
    """A run as the API and CLI show it (UTC ISO times)."""

    return {
        "run_id": int(row["id"]),
        "account_id": int(row["account_id"]),
        "kind": row["kind"],
        "status": row["status"],
        "requested_by": row["requested_by"],
        "pages_read": row["pages_read"],
        "contacts_seen": row["contacts_seen"],
        "rows_imported": row["rows_imported"],
        "emails_excluded": row["emails_excluded"],
        "row_errors": row["row_errors"],
        "import_calls": row["import_calls"],
        "checkpoint_page": row["checkpoint_page"],
        "watermark": row["watermark"],
        "error": row["error"],
        "created_at": iso_utc(row["created_at"]),
        "started_at": iso_utc(row["started_at"]),
        "finished_at": iso_utc(row["finished_at"]),
        "updated_at": iso_utc(row["updated_at"]),
        "finished": row["status"] not in ACTIVE_STATUSES,
    }


def account_watermark(db: Database, account_id: int) -> int | None:
    """The newest amoCRM `updated_at` a finished run of the account has applied."""
    row = db.fetch_one(
        "SELECT MAX(watermark) AS w FROM sync_runs WHERE account_id = %s AND status = %s",
        (account_id, DONE),
    )
    return int(row["w"]) if row and row["w"] is not None else None


def enqueue_reconciles(mode: str = "incremental") -> int:
    """Queue a reconcile run for every active, connected account; returns how many were queued.

    An account without a finished run has no watermark yet: it gets a full run instead.
    """
    if mode not in ("incremental", "full"):
        raise ValueError(f"unknown reconcile mode {mode!r}")
    db = get_database()
    # Accounts whose reconciles are paused (amoCRM answered 402: unpaid) are left out until the
    # pause ends; a run requested by hand still goes.
    allowed = reconcile_allowed_sql("a")  # a constant condition of ours, no input in it
    rows = db.fetch_all(
        "SELECT a.id FROM accounts a JOIN unisender_settings u ON u.account_id = a.id "  # noqa: S608
        f"WHERE a.status = 'active' AND u.list_id IS NOT NULL AND {allowed} ORDER BY a.id"
    )
    queued = 0
    for row in rows:
        account_id = int(row["id"])
        kind: RunKind = "full"
        if mode == "incremental" and account_watermark(db, account_id) is not None:
            kind = "incremental"
        if request_sync(db, account_id, kind=kind, requested_by="scheduler").created:
            queued += 1
    log.info("reconciles queued", extra={"mode": mode, "accounts": len(rows), "queued": queued})
    return queued


# --- the consumer ---------------------------------------------------------------------------


class RunBusy(RetryJob):
    """Another runner holds the account's run lock: come back later, nothing failed."""


def run_lock_name(db: Database, account_id: int) -> str:
    # GET_LOCK names are server-wide (64 chars max): the database name keeps deployments apart.
    return f"{db.name[:40]}:run:{account_id}"


def handle_sync_batch(batch: list[Delivery[FullSyncJob]]) -> None:
    """Worker type `full-sync`: run each job's sync to the end (or to its next retry).

    A run is marked failed exactly when the queue stops retrying its job: a known-transient
    failure (RetryJob) when the job's retry budget cannot cover the next delay, an unexpected
    exception after JOB_MAX_ATTEMPTS (the consumer's own rules, see shared.jobqueue).
    """
    db = get_database()
    settings = get_settings()
    for delivery in batch:
        job = delivery.job
        try:
            execute_run(db, job, touch=_lease_keeper(delivery))
        except RunBusy as exc:
            # Not the run's failure: its runner is alive. If that runner dies, the lock goes
            # with its connection and this job, back after the delay, resumes the run.
            log.info("sync run busy elsewhere", extra={"run_id": job.run_id, "delay": exc.delay})
            delivery.retry(exc.reason, delay=exc.delay)
        except RetryJob as exc:
            # The delay is chosen here, not by the consumer, so both sides agree on the give-up.
            delay = int(exc.delay) if exc.delay is not None else _backoff(delivery.attempts)
            _record_error(db, job.run_id, exc.reason)
            if delivery.age + delay > settings.job_retry_budget_seconds:
                _finish(
                    db,
                    job.run_id,
                    FAILED,
                    f"gave up after {delivery.attempts} attempts in {delivery.age} s: {exc.reason}",
                )
            delivery.retry(exc.reason, delay=delay)
        except Exception as exc:
            log.exception("sync run failed unexpectedly", extra={"run_id": job.run_id})
            reason = f"{type(exc).__name__}: {exc}"
            _record_error(db, job.run_id, reason)
            if delivery.attempts >= settings.job_max_attempts:
                _finish(
                    db, job.run_id, FAILED, f"gave up after {delivery.attempts} attempts: {reason}"
                )
            delivery.retry(reason, transient=False)


def _backoff(attempts: int) -> int:
    """The consumer's backoff for this attempt with the settings its workers run with."""
    settings = get_settings()
    return backoff_seconds(
        attempts, base=settings.job_backoff_base_seconds, cap=settings.job_backoff_max_seconds
    )


def _lease_keeper(delivery: Delivery[FullSyncJob]) -> Callable[[], None]:
    """`delivery.touch`, tolerating a reservation lost to an expired TTR."""
    lost = False

    def touch() -> None:
        nonlocal lost
        if lost:
            return
        try:
            delivery.touch()
        except greenstalk.NotFoundError:
            # The TTR ran out (a slow batch) and another consumer took the job. The run lock
            # keeps this runner the only one, so finishing here is right; the other consumer
            # releases the job, and when it comes back it finds the run finished.
            lost = True
            log.warning(
                "full-sync job reservation lost; the run lock keeps this runner",
                extra={"run_id": delivery.job.run_id, "job_id": delivery.job_id},
            )

    return touch


def execute_run(db: Database, job: FullSyncJob, *, touch: Callable[[], None] | None = None) -> None:
    """Run one sync job; raises RetryJob for transient failures (the run resumes later).

    One runner per account at a time: a job whose TTR ran out while its runner is still busy
    is handed to a second consumer by beanstalkd, and two runners would apply the same pages
    and add the same counts twice. The run lock (MySQL GET_LOCK, released when its connection
    dies with a killed runner) makes the second one raise `RunBusy` instead.
    """
    with db.named_lock(run_lock_name(db, job.account_id), timeout=0) as acquired:
        if not acquired:
            raise RunBusy(
                f"account {job.account_id}: another consumer is executing its sync run",
                delay=min(get_settings().full_sync_ttr_seconds, 60),
            )
        _execute_locked(db, job, touch=touch)


def _execute_locked(db: Database, job: FullSyncJob, *, touch: Callable[[], None] | None) -> None:
    keep_alive = touch or (lambda: None)
    run = get_sync_run(db, job.run_id)
    if run is None or int(run["account_id"]) != job.account_id:
        log.error("sync job for an unknown run", extra={"run_id": job.run_id})
        return
    if run["status"] not in ACTIVE_STATUSES:
        log.info("sync run already finished", extra={"run_id": job.run_id, "s": run["status"]})
        return
    account = get_account(db, job.account_id)
    if account is None:
        _finish(db, job.run_id, FAILED, "account no longer installed")
        return
    if not account.is_active:
        _finish(db, job.run_id, SKIPPED, f"account is {account.status}")
        return
    link = get_unisender_link(db, account.id)
    if link is None or link.list_id is None:
        _finish(db, job.run_id, SKIPPED, "no Unisender key connected")
        return
    db.execute(
        "UPDATE sync_runs SET status = %s, started_at = COALESCE(started_at, %s), error = NULL "
        "WHERE id = %s",
        (RUNNING, utcnow(), job.run_id),
    )
    try:
        amo = amocrm_client_for(account)
        with unisender_client_for(link) as uni:
            runner = _Runner(db, account, link, amo, uni, job.run_id, keep_alive)
            if job.mode == "full":
                runner.run_full(start_page=int(run["checkpoint_page"] or 0) + 1)
            else:
                runner.run_incremental(account_watermark(db, account.id) or 0)
    except (amo_errors.RateLimited, amo_errors.Transient) as exc:
        delay = getattr(exc, "retry_after", None)
        raise RetryJob(f"amoCRM: {type(exc).__name__}: {exc}", delay=delay) from exc
    except amo_errors.AmoCrmError as exc:
        # 401 after a refresh, 402, 403 (blocked), 400: repeating the run cannot help. 403 and
        # 401 stop the account too, or every reconcile would queue a run that meets them again.
        record_amocrm_failure(db, account.id, exc)
        _finish(db, job.run_id, FAILED, f"amoCRM refused: {type(exc).__name__}: {exc}")
        return
    except uni_errors.Transient as exc:
        raise RetryJob(f"Unisender: {type(exc).__name__}: {exc}") from exc
    except uni_errors.UnisenderError as exc:
        _finish(db, job.run_id, FAILED, f"Unisender refused: {type(exc).__name__}: {exc}")
        return
    _finish(db, job.run_id, DONE, None)


def _finish(db: Database, run_id: int, status: str, error: str | None) -> None:
    db.execute(
        "UPDATE sync_runs SET status = %s, error = %s, finished_at = %s WHERE id = %s",
        (status, error[:1000] if error else None, utcnow(), run_id),
    )
    log.log(
        logging.INFO if status == DONE else logging.WARNING,
        "sync run finished",
        extra={"run_id": run_id, "status": status, "error": (error or "")[:300]},
    )


def _record_error(db: Database, run_id: int, reason: str) -> None:
    db.execute("UPDATE sync_runs SET error = %s WHERE id = %s", (reason[:1000], run_id))


def read_ahead(
    source: Iterator[T],
    *,
    ahead: int = PREFETCH_PAGES,
    on_wait: Callable[[], None] = lambda: None,
    on_exit: Callable[[], None] = lambda: None,
    wait_seconds: float = _PREFETCH_TOUCH_SECONDS,
) -> Generator[T, None, None]:
    """The items of `source`, read by a thread of its own at most `ahead` items ahead.

    An exception of the source is raised here, in order, after the items before it. Closing
    this iterator (use contextlib.closing: an exception in the caller's loop does not close it)
    stops the reader, closes the source in the reader's thread and waits for it. `on_wait` runs
    in the caller's thread whenever an item takes `wait_seconds`; `on_exit` in the reader's
    thread when it ends. The reader keeps the caller's context (request id in its logs).
    """
    if ahead < 1:
        raise ValueError("ahead must be >= 1")
    # The reader takes a permit before reading an item; the caller gives it back on taking one.
    permits = threading.Semaphore(ahead)
    slots: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def permitted() -> bool:
        while not stop.is_set():
            if permits.acquire(timeout=0.2):
                return True
        return False

    def read() -> None:
        try:
            items = iter(source)
            while permitted():
                try:
                    item = next(items)
                except StopIteration:
                    slots.put(("end", None))
                    return
                slots.put(("item", item))
        except BaseException as exc:  # handed over and raised in the caller's thread
            slots.put(("error", exc))
        finally:
            close = getattr(source, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                on_exit()

    reader = threading.Thread(
        target=contextvars.copy_context().run, args=(read,), name="read-ahead", daemon=True
    )
    reader.start()
    try:
        while True:
            try:
                kind, value = slots.get(timeout=wait_seconds)
            except queue.Empty:
                on_wait()
                continue
            if kind == "item":
                permits.release()
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        reader.join(_PREFETCH_JOIN_SECONDS)
        if reader.is_alive():
            log.warning("read-ahead thread still busy after its reader stopped")


@dataclass
class _Pending:
    """Contact states read but not applied yet, with the page each came from."""

    states: deque[tuple[int, ContactState]] = field(default_factory=deque)
    rows: int = 0
    page_sizes: dict[int, int] = field(default_factory=dict)

    def add(self, page: int, states: Iterable[ContactState]) -> None:
        count = 0
        for state in states:
            self.states.append((page, state))
            self.rows += max(1, len(state.emails))
            count += 1
        self.page_sizes[page] = self.page_sizes.get(page, 0) + count

    def take(self, max_rows: int) -> list[tuple[int, ContactState]]:
        """States from the front worth at most `max_rows` import rows (at least one state)."""
        taken: list[tuple[int, ContactState]] = []
        rows = 0
        while self.states:
            cost = max(1, len(self.states[0][1].emails))
            if taken and rows + cost > max_rows:
                break
            taken.append(self.states.popleft())
            rows += cost
        self.rows -= rows
        return taken


class _Runner:
    """One run's reading and applying; counts go to the run row as they happen."""

    def __init__(
        self,
        db: Database,
        account: AccountRow,
        link: UnisenderLink,
        amo: AmoCrmClient,
        uni: UnisenderClient,
        run_id: int,
        keep_alive: Callable[[], None],
    ) -> None:
        self.db = db
        self.account = account
        self.list_id = int(link.list_id or 0)
        self.amo = amo
        self.uni = uni
        self.run_id = run_id
        self.keep_alive = keep_alive
        self.enum_codes = load_enum_codes(db, account.id)
        self.allowed = set(account.email_types) if account.email_types else None

    def state_of(self, contact: Contact) -> ContactState:
        # Read from amoCRM just now: seen alive, it overrides a deletion we dated ourselves.
        return state_from_contact(
            contact, enum_codes=self.enum_codes, allowed_types=self.allowed, received_at=time.time()
        )

    def apply(self, states: list[ContactState], *, mark_seen: bool) -> ApplyResult:
        self.keep_alive()
        result = apply_contact_states(
            self.db,
            self.uni,
            account_id=self.account.id,
            list_id=self.list_id,
            states=states,
            run_id=self.run_id if mark_seen else None,
            keep_alive=self.keep_alive,
        )
        self.keep_alive()
        return result

    def record(
        self,
        result: ApplyResult,
        *,
        pages: int = 0,
        contacts: int = 0,
        checkpoint: int | None = None,
        watermark: int = 0,
    ) -> None:
        self.db.execute(
            "UPDATE sync_runs SET pages_read = pages_read + %s, "
            "contacts_seen = contacts_seen + %s, rows_imported = rows_imported + %s, "
            "emails_excluded = emails_excluded + %s, "
            "row_errors = row_errors + %s, import_calls = import_calls + %s, "
            "checkpoint_page = COALESCE(%s, checkpoint_page), "
            "watermark = GREATEST(COALESCE(watermark, 0), %s) WHERE id = %s",
            (
                pages,
                contacts,
                result.rows_imported,
                result.emails_excluded,
                result.row_errors,
                result.import_calls,
                checkpoint,
                watermark,
                self.run_id,
            ),
        )

    # full ------------------------------------------------------------------------------------

    def run_full(self, *, start_page: int) -> None:
        pending = _Pending()
        done_through = start_page - 1
        last_read = done_through
        pages = read_ahead(
            self.amo.iter_contact_pages(limit=MAX_PAGE, order={"id": "asc"}, start_page=start_page),
            on_wait=self.keep_alive,
            # The reader's throttle slots and token reads use a connection of its own thread.
            on_exit=self.db.close,
        )
        with contextlib.closing(pages):
            for page in pages:
                self.keep_alive()
                pending.add(page.page, (self.state_of(c) for c in page.contacts))
                last_read = page.page
                while pending.rows >= IMPORT_BATCH_ROWS:
                    done_through = self._flush(pending, done_through, last_read)
        while pending.states:
            done_through = self._flush(pending, done_through, last_read)
        self.exclude_unseen()

    def _flush(self, pending: _Pending, done_through: int, last_read: int) -> int:
        taken = pending.take(IMPORT_BATCH_ROWS)
        result = self.apply([s for _, s in taken], mark_seen=True)
        # The checkpoint is the last page whose every contact is applied.
        complete = last_read if not pending.states else pending.states[0][0] - 1
        pages = [p for p in sorted(pending.page_sizes) if done_through < p <= complete]
        contacts = sum(pending.page_sizes.pop(p) for p in pages)
        self.record(
            result,
            pages=len(pages),
            contacts=contacts,
            checkpoint=complete if complete > done_through else None,
            watermark=max((s.updated_at for _, s in taken), default=0),
        )
        return max(done_through, complete)

    def unseen(self) -> Iterator[list[Row]]:
        """Our live contacts this run has not seen and nobody touched since it started."""
        run = get_sync_run(self.db, self.run_id)
        started = run["started_at"] if run else utcnow()
        after = 0
        while True:
            rows = self.db.fetch_all(
                "SELECT contact_id, name, amo_updated_at FROM contacts WHERE account_id = %s "
                "AND is_deleted = 0 AND (seen_in_run IS NULL OR seen_in_run <> %s) "
                "AND updated_at < %s AND contact_id > %s ORDER BY contact_id LIMIT %s",
                (self.account.id, self.run_id, started, after, _UNSEEN_BATCH),
            )
            if not rows:
                return
            yield rows
            after = int(rows[-1]["contact_id"])

    def exclude_unseen(self) -> None:
        total_row = self.db.fetch_one(
            "SELECT COUNT(*) AS n FROM contacts WHERE account_id = %s AND is_deleted = 0 "
            "AND (seen_in_run IS NULL OR seen_in_run <> %s)",
            (self.account.id, self.run_id),
        )
        verify = total_row is not None and int(total_row["n"]) <= VERIFY_UNSEEN_MAX
        now = int(time.time())
        for rows in self.unseen():
            states: list[ContactState] = []
            for row in rows:
                contact = self.amo.get_contact(int(row["contact_id"])) if verify else None
                self.keep_alive()
                if contact is not None:
                    states.append(self.state_of(contact))  # missed by the scan, still there
                    continue
                states.append(
                    ContactState(
                        contact_id=int(row["contact_id"]),
                        name=str(row["name"]),
                        # amoCRM stamps a deletion with its time; ours is the closest we know.
                        updated_at=max(int(row["amo_updated_at"]), now),
                        emails=[],
                        deleted=True,
                        # Learned after this run's reads of the same second: it must win a tie.
                        received_at=time.time(),
                        synthetic_time=True,
                    )
                )
            result = self.apply(states, mark_seen=True)
            self.record(result)

    # incremental -----------------------------------------------------------------------------

    def run_incremental(self, watermark: int) -> None:
        batch: list[ContactState] = []
        rows = 0
        seen = 0
        newest = watermark
        for contact in self.amo.iter_contacts_updated_since(watermark):
            self.keep_alive()
            state = self.state_of(contact)
            batch.append(state)
            rows += max(1, len(state.emails))
            seen += 1
            newest = max(newest, contact.updated_at)
            if rows >= IMPORT_BATCH_ROWS:
                self.record(self.apply(batch, mark_seen=False), contacts=len(batch))
                batch, rows = [], 0
        result = self.apply(batch, mark_seen=False) if batch else ApplyResult()
        # The watermark is stored only at the end: a crashed incremental run starts over from
        # the old one.
        self.record(
            result,
            contacts=len(batch),
            pages=(seen + MAX_PAGE - 1) // MAX_PAGE,
            watermark=newest,
        )
