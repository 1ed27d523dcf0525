"""The contact-events consumer: webhook events, coalesced per account, applied to Unisender.

A batch (up to WORKER_TYPES["contact-events"].batch_size jobs, or a short linger) is grouped by
account; per contact only the newest event counts; the account's states go through
`shared.sync.apply_contact_states` in one diff, so a burst of N events costs about N/500
importContacts calls. Each account's jobs succeed or retry together and independently of the
other accounts in the batch; when they fail together for a reason that is not the account's
(bad data in one event), they are applied again one by one so only the bad job is buried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared import failures
from shared.accounts import AccountRow, get_account, record_amocrm_failure
from shared.amocrm.client import AmoCrmClient
from shared.clock import utcnow
from shared.contacts import resolve_enum_codes, select_emails
from shared.db import Database, get_database
from shared.failures import Scope
from shared.jobqueue import Delivery, PoisonJob
from shared.jobs import ContactEvent, ContactEventsJob
from shared.list_binding import sync_refusal
from shared.sync import (
    ApplyResult,
    ContactState,
    apply_contact_states,
    newest_per_contact,
    state_from_contact,
)
from shared.tokens import amocrm_client_for
from shared.unisender_link import get_unisender_link, unisender_client_for

log = logging.getLogger(__name__)

# Reserved jobs are touched at most this often while an account's events are applied, so a
# burst of per-address excludes never outlives the job's TTR.
TOUCH_INTERVAL_SECONDS = 5.0


class AccountGone(PoisonJob):
    """The account no longer exists here: every job of it would fail the same way."""

    scope = Scope.ACCOUNT


class ListShared(PoisonJob):
    """The account's list is bound to another account (a link from before list bindings).

    Writing into it would undo the other account's list, so the events are buried with the way
    out (`amosync lists split <name>`); after the split, `amosync queue kick contact-events`
    applies them to the account's own list. Nothing is lost.
    """

    scope = Scope.ACCOUNT


@dataclass(frozen=True)
class _Timed:
    event: ContactEvent
    at: int  # the event's updated_at, or when we received it for events that carry none
    received_at: float

    @property
    def contact_id(self) -> int:
        return self.event.contact_id

    @property
    def synthetic(self) -> bool:
        return not self.event.updated_at

    @property
    def version(self) -> tuple[float, ...]:
        return (self.at, self.received_at)


def handle_event_batch(batch: list[Delivery[ContactEventsJob]]) -> None:
    """Consumer entry point (worker type `contact-events`)."""
    db = get_database()
    by_account: dict[int, list[Delivery[ContactEventsJob]]] = {}
    for delivery in batch:
        by_account.setdefault(delivery.job.account_id, []).append(delivery)
    for account_id, deliveries in by_account.items():
        settle_account_jobs(db, account_id, deliveries)


class _Toucher:
    """Extends the TTR of every reserved job of an account while its events are applied."""

    def __init__(self, deliveries: Sequence[Delivery[ContactEventsJob]]) -> None:
        self.deliveries = deliveries
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last < TOUCH_INTERVAL_SECONDS:
            return
        self.last = time.monotonic()
        for delivery in self.deliveries:
            try:
                delivery.touch()
            except Exception:  # a lost touch only risks a duplicate delivery (idempotent)
                log.warning("could not touch job", extra={"job_id": delivery.job_id})


def settle_account_jobs(
    db: Database, account_id: int, deliveries: Sequence[Delivery[ContactEventsJob]]
) -> None:
    """Apply one account's jobs together; one by one when that fails for one job's data."""
    try:
        apply_account_events(
            db, account_id, [d.job for d in deliveries], keep_alive=_Toucher(deliveries)
        )
        return
    except Exception as exc:  # one account's trouble never settles another's jobs
        _record_account_failure(db, account_id, exc)
        decision = failures.decide(exc)
        outcome = failures.job_outcome(exc)
        # Only a failure of one row's data is worth bisecting: an account-wide one (its key, its
        # tokens) or an egress-wide one would fail every job the same way.
        if isinstance(outcome, PoisonJob) and len(deliveries) > 1 and decision.scope is Scope.ROW:
            log.warning(
                "account events failed together: applying them one by one",
                extra={"account_id": account_id, "jobs": len(deliveries)},
            )
            for delivery in deliveries:
                settle_account_jobs(db, account_id, [delivery])
            return
        for delivery in deliveries:
            if isinstance(outcome, PoisonJob):
                delivery.bury(outcome.reason)
            else:
                delivery.retry(outcome.reason, delay=outcome.delay, deferred=outcome.deferred)
        log.warning(
            "account events not applied",
            extra={
                "account_id": account_id,
                "jobs": len(deliveries),
                "job_ids": [d.job_id for d in deliveries][:20],
                "outcome": "bury" if isinstance(outcome, PoisonJob) else "retry",
                "reason": outcome.reason[:300],
            },
            exc_info=not decision.known,
        )


def _record_account_failure(db: Database, account_id: int, exc: BaseException) -> None:
    """A refusal that stops the account (or pauses its reconciles) is recorded, as elsewhere."""
    try:
        record_amocrm_failure(db, account_id, exc)
    except Exception:  # the jobs are settled regardless; the next refusal records it again
        log.warning(
            "could not record the amoCRM refusal", extra={"account_id": account_id}, exc_info=True
        )


def timed_events(jobs: Sequence[ContactEventsJob]) -> list[_Timed]:
    """Every event with the time it counts at, in queue order."""
    # Deletes carry no timestamp: the deletion happened no later than we heard of it.
    return [
        _Timed(event, event.updated_at or int(job.received_at), job.received_at)
        for job in jobs
        for event in job.events
    ]


def apply_account_events(
    db: Database,
    account_id: int,
    jobs: Sequence[ContactEventsJob],
    *,
    keep_alive: Callable[[], None] | None = None,
) -> ApplyResult | None:
    """Apply one account's events; None when they were deliberately dropped."""
    account = get_account(db, account_id)
    if account is None:
        raise AccountGone(f"no account {account_id}")
    total = sum(len(job.events) for job in jobs)
    if account.status == "disabled":
        # The integration was uninstalled in amoCRM: its owner asked us to stop syncing.
        log.info("events dropped: account disabled", extra={"account_id": account_id})
        return None
    link = get_unisender_link(db, account_id)
    if link is None or link.list_id is None:
        # Disconnected (or never connected): nothing to write to. Not a loss: connecting
        # subscribes the webhooks only after the key is validated and starts a full sync.
        log.info("events dropped: no Unisender link", extra={"account_id": account_id})
        return None
    refusal = sync_refusal(
        db, account_id=account_id, api_key=link.api_key.get_secret_value(), list_id=link.list_id
    )
    if refusal is not None:
        raise ListShared(refusal)
    # Other non-active states (reauth_required) still apply: webhook events carry the
    # data; only enum refreshes and restores need amoCRM, and those fail into a visible bury.
    timed = newest_per_contact(timed_events(jobs))
    states = _states(db, account, timed)
    with unisender_client_for(link) as unisender:
        result = apply_contact_states(
            db,
            unisender,
            account_id=account_id,
            list_id=link.list_id,
            states=states,
            keep_alive=keep_alive,
        )
    record_event_minute(db, account_id, total)
    return result


def _states(db: Database, account: AccountRow, timed: list[_Timed]) -> list[ContactState]:
    amo: AmoCrmClient | None = None

    def client() -> AmoCrmClient:
        nonlocal amo
        if amo is None:
            amo = amocrm_client_for(account, db=db)
        return amo

    allowed = set(account.email_types) if account.email_types else None
    codes: dict[int, str] = {}
    if allowed is not None:
        # Types only matter when the account restricts them; then webhook enum ids need the map.
        values = [v for t in timed for v in (t.event.emails or [])]
        codes = resolve_enum_codes(
            db, account.id, values, fetch_fields=lambda: client().get_contact_custom_fields()
        )
    states: list[ContactState] = []
    for item in timed:
        event = item.event
        if event.action == "delete":
            states.append(_deleted(item, item.received_at))
        elif event.emails is None:
            # A restore without fields: amoCRM is the source of truth for what came back.
            contact = client().get_contact(event.contact_id)
            read_at = time.time()
            if contact is None:
                states.append(_deleted(item, read_at))
                continue
            states.append(
                state_from_contact(
                    contact,
                    enum_codes=codes,
                    allowed_types=allowed,
                    received_at=read_at,
                    not_before=item.at,
                )
            )
        else:
            emails = select_emails(event.emails, enum_codes=codes, allowed_types=allowed)
            states.append(
                ContactState(
                    event.contact_id, event.name, item.at, emails, received_at=item.received_at
                )
            )
    return states


def _deleted(item: _Timed, received_at: float) -> ContactState:
    return ContactState(
        item.event.contact_id,
        "",
        item.at,
        [],
        deleted=True,
        received_at=received_at,
        synthetic_time=item.synthetic,
    )


def record_event_minute(db: Database, account_id: int, events: int) -> None:
    """Count applied events per account and minute (the status page chart)."""
    minute = utcnow().replace(second=0, microsecond=0)
    db.execute(
        "INSERT INTO event_minutes (account_id, minute, events) VALUES (%s, %s, %s) "
        "ON DUPLICATE KEY UPDATE events = events + VALUES(events)",
        (account_id, minute, events),
    )
