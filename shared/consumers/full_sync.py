"""The full-sync consumer: full and incremental runs, streamed, checkpointed, resumable.

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
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import greenstalk

from shared import failures
from shared.accounts import (
    AccountRow,
    get_account,
    record_amocrm_failure,
)
from shared.amocrm.client import MAX_PAGE, AmoCrmClient
from shared.amocrm.models import Contact
from shared.clock import utcnow
from shared.contacts import load_enum_codes
from shared.db import Database, Row, get_database
from shared.failures import Failure
from shared.jobqueue import Delivery, RetryJob
from shared.jobs import FullSyncJob
from shared.list_binding import sync_refusal
from shared.prefetch import read_ahead
from shared.settings import get_settings
from shared.sync import (
    ApplyResult,
    ContactState,
    ListStatuses,
    apply_contact_states,
    state_from_contact,
)
from shared.sync_runs import (
    ACTIVE_STATUSES,
    DONE,
    FAILED,
    RUNNING,
    SKIPPED,
    account_watermark,
    finish_run,
    get_sync_run,
    record_run_error,
)
from shared.tokens import amocrm_client_for
from shared.unisender.client import UnisenderClient
from shared.unisender_link import UnisenderLink, get_unisender_link, unisender_client_for

log = logging.getLogger(__name__)

IMPORT_BATCH_ROWS = 500  # Unisender's importContacts maximum
# Unseen contacts are confirmed one by one with amoCRM (a page shifted by a deletion during the
# run can hide a live contact); past this many the scan is trusted as it is, to stay far from
# amoCRM's "uncontrolled scans" blocking rule.
VERIFY_UNSEEN_MAX = 200
# Unseen contacts applied at once: a full importContacts call's worth, so 1,000 deletions cost
# two removal calls (plus one shared status export), not five.
_UNSEEN_BATCH = IMPORT_BATCH_ROWS


class RunBusy(RetryJob):
    """Another runner holds the account's run lock: come back later, nothing failed."""


def run_lock_name(db: Database, account_id: int) -> str:
    # GET_LOCK names are server-wide (64 chars max): the database name keeps deployments apart.
    return f"{db.name[:40]}:run:{account_id}"


def handle_sync_batch(batch: list[Delivery[FullSyncJob]]) -> None:
    """Worker type `full-sync`: run each job's sync to the end (or to its next retry).

    A run is marked failed exactly when the queue stops retrying its job: the delivery's
    `RetryBudget` (the consumer's own) answers both.
    """
    db = get_database()
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
            # The delay is fixed here, not left to the consumer, so the run's give-up and the
            # queue's (the delivery's RetryBudget) are the same decision.
            delay = delivery.budget.delay(delivery.attempts, exc.delay)
            delivery.retry(exc.reason, delay=delay, deferred=exc.deferred)
            _record_retry(db, delivery)
        except Exception as exc:
            log.exception("sync run failed unexpectedly", extra={"run_id": job.run_id})
            delivery.retry(f"{type(exc).__name__}: {exc}", transient=False)
            _record_retry(db, delivery)


def _record_retry(db: Database, delivery: Delivery[FullSyncJob]) -> None:
    """Keep the run's last error; mark it failed when the queue will not retry its job again."""
    run_id = delivery.job.run_id
    record_run_error(db, run_id, delivery.reason)
    if not delivery.may_retry():
        spent = f" in {delivery.age} s" if delivery.transient else ""
        finish_run(
            db,
            run_id,
            FAILED,
            f"gave up after {delivery.attempts} attempts{spent}: {delivery.reason}",
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
        finish_run(db, job.run_id, FAILED, "account no longer installed")
        return
    if not account.is_active:
        finish_run(db, job.run_id, SKIPPED, f"account is {account.status}")
        return
    link = get_unisender_link(db, account.id)
    if link is None or link.list_id is None:
        finish_run(db, job.run_id, SKIPPED, "no Unisender key connected")
        return
    refusal = sync_refusal(
        db, account_id=account.id, api_key=link.api_key.get_secret_value(), list_id=link.list_id
    )
    if refusal is not None:  # another account's list: writing into it would undo that account
        finish_run(db, job.run_id, FAILED, refusal)
        return
    db.execute(
        "UPDATE sync_runs SET status = %s, started_at = COALESCE(started_at, %s), error = NULL "
        "WHERE id = %s",
        (RUNNING, utcnow(), job.run_id),
    )
    try:
        amo = amocrm_client_for(account, bulk=True)
        with unisender_client_for(link) as uni:
            runner = _Runner(db, account, link, amo, uni, job.run_id, keep_alive)
            if job.mode == "full":
                runner.run_full(start_page=int(run["checkpoint_page"] or 0) + 1)
            else:
                runner.run_incremental(account_watermark(db, account.id) or 0)
    except Failure as exc:
        decision = failures.decide(exc)
        if decision.retriable:
            raise RetryJob(decision.reason, delay=decision.delay, deferred=decision.defers) from exc
        # 401 after a refresh, 402, 400, a rejected Unisender key: repeating the run cannot
        # help. A refusal that stops the account is recorded, or every reconcile would queue a
        # run that meets it again.
        record_amocrm_failure(db, account.id, exc)
        finish_run(db, job.run_id, FAILED, decision.reason)
        return
    finish_run(db, job.run_id, DONE, None)


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
        # One status reader per run: its list export is shared by every batch of the run.
        self.statuses = ListStatuses(uni, self.list_id)

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
            statuses=self.statuses,
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
