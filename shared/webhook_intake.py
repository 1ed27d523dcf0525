"""Receiving amoCRM webhooks: the per-account URL secret, and durable queuing of the events.

The handler must answer within amoCRM's 2 s even under load, so it does one thing: check the
secret (one DB read, then cached briefly), parse, put jobs on Beanstalk, answer. It never calls
amoCRM or Unisender.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass

import greenstalk

from shared import errors
from shared.amocrm.webhooks import (
    SkippedEntity,
    WebhookParseError,
    event_json_bound,
    parse_webhook,
)
from shared.crypto import DecryptionFailed, get_secret_box, new_secret, sha256_hex
from shared.db import Database
from shared.jobqueue import Queue
from shared.jobs import ContactEvent, ContactEventsJob
from shared.logs import request_id_var
from shared.settings import get_settings

WEBHOOK_EVENTS = ("add_contact", "update_contact", "delete_contact", "restore_contact")
# A secret read from the DB is trusted this long in one process; a disconnect is seen by every
# process within this window (events accepted meanwhile are dropped by the consumer).
SECRET_CACHE_SECONDS = 30.0
# beanstalkd refuses jobs above its max job size (64 KiB by default): split big POSTs.
MAX_JOB_BYTES = 48_000

# Skipped entities logged one by one per POST; the rest only counted (a hostile body may hold
# thousands).
MAX_SKIPS_LOGGED = 20

log = logging.getLogger(__name__)

_cache: dict[int, tuple[str, float]] = {}
_cache_lock = threading.Lock()


def webhook_destination(account_id: int, secret: str) -> str:
    """The URL amoCRM posts this account's contact events to."""
    return f"{destination_prefix(account_id)}{secret}"


def destination_prefix(account_id: int) -> str:
    """Every destination of this account (any secret) starts with this."""
    return f"{get_settings().public_url.rstrip('/')}/webhook/{int(account_id)}/"


def load_webhook_secret(db: Database, account_id: int) -> str | None:
    """The account's current secret (decrypted), or None when it has none."""
    row = db.fetch_one("SELECT webhook_secret_enc FROM accounts WHERE id = %s", (account_id,))
    if row is None or row["webhook_secret_enc"] is None:
        return None
    try:
        return get_secret_box().decrypt(row["webhook_secret_enc"])
    except DecryptionFailed:
        return None


def ensure_webhook_secret(db: Database, account_id: int) -> str:
    """The account's secret, created (random, stored encrypted) when it has none yet."""
    current = load_webhook_secret(db, account_id)
    if current is not None:
        return current
    secret = new_secret(24)
    db.execute(
        "UPDATE accounts SET webhook_secret_enc = %s WHERE id = %s",
        (get_secret_box().encrypt(secret), account_id),
    )
    forget_cached_secret(account_id)
    return secret


def clear_webhook_secret(db: Database, account_id: int) -> None:
    db.execute("UPDATE accounts SET webhook_secret_enc = NULL WHERE id = %s", (account_id,))
    forget_cached_secret(account_id)


def forget_cached_secret(account_id: int) -> None:
    with _cache_lock:
        _cache.pop(account_id, None)


def check_webhook_secret(db: Database, account_id: int, given: str) -> bool:
    """Whether `given` is the account's secret; compared in constant time (as hashes)."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(account_id)
    if cached is None or cached[1] <= now:
        secret = load_webhook_secret(db, account_id)
        if secret is None:
            forget_cached_secret(account_id)
            return False
        cached = (sha256_hex(secret), now + SECRET_CACHE_SECONDS)
        with _cache_lock:
            _cache[account_id] = cached
    return hmac.compare_digest(sha256_hex(given).encode(), cached[0].encode())


@dataclass(frozen=True)
class Accepted:
    """What a webhook POST put on the queue."""

    events: int
    jobs: list[int]
    ignored: int
    skipped: int = 0


def split_events(
    events: list[ContactEvent], *, max_bytes: int = MAX_JOB_BYTES
) -> list[list[ContactEvent]]:
    """Consecutive groups of events whose JSON stays under `max_bytes` per job."""
    # The usual POST fits one job by far: serialize events to measure them only when it may not.
    if sum(event_json_bound(e) + 1 for e in events) <= max_bytes:
        return [events] if events else []
    groups: list[list[ContactEvent]] = []
    current: list[ContactEvent] = []
    size = 0
    for event in events:
        length = len(event.model_dump_json()) + 1
        if current and size + length > max_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(event)
        size += length
    if current:
        groups.append(current)
    return groups


def accept_webhook(
    db: Database, queue: Queue, *, account_id: int, secret: str, body: bytes
) -> Accepted:
    """Check, parse and durably queue one webhook POST; raises the HTTP errors to answer.

    A body that is not an amoCRM contacts webhook of this account is refused whole (400, nothing
    queued); inside one, malformed entities are skipped and logged and the rest is queued (200).
    """
    # Unknown account and wrong secret look the same from outside: nothing to enumerate.
    if not secret or len(secret) > 200 or not check_webhook_secret(db, account_id, secret):
        raise errors.NotFound("no such webhook", code="webhook_not_found")
    try:
        parsed = parse_webhook(body)
    except WebhookParseError as exc:
        raise errors.BadRequest(str(exc), code="malformed_webhook") from exc
    if parsed.account_id != account_id:
        raise errors.BadRequest(
            "the body's account[id] does not match the webhook URL", code="account_mismatch"
        )
    skipped = list(parsed.skipped)
    received_at = time.time()
    # Events of an account that is not active are queued all the same: the consumer decides
    # (it still applies what needs no amoCRM call; a disconnected account's events are dropped
    # there). The intake stays a pure "durably accept" step.
    job_ids: list[int] = []
    for group in split_events(parsed.events):
        job_ids += _put_events(queue, account_id, group, received_at, skipped)
    _log_skipped(account_id, skipped)
    return Accepted(
        events=len(parsed.events) - (len(skipped) - len(parsed.skipped)),
        jobs=job_ids,
        ignored=parsed.ignored,
        skipped=len(skipped),
    )


def _put_events(
    queue: Queue,
    account_id: int,
    events: list[ContactEvent],
    received_at: float,
    skipped: list[SkippedEntity],
) -> list[int]:
    """Queue these events as one job; halves on beanstalkd's JobTooBigError (the parser's caps
    make that unreachable unless beanstalkd runs with a smaller -z), skipping a lone event."""
    job = ContactEventsJob(
        account_id=account_id,
        events=events,
        received_at=received_at,
        request_id=request_id_var.get(),
    )
    try:
        return [queue.put(job)]
    except greenstalk.JobTooBigError:
        if len(events) == 1:
            event = events[0]
            skipped.append(
                SkippedEntity(event.action, "", event.contact_id, "too big for a queue job")
            )
            return []
        half = len(events) // 2
        return [
            *_put_events(queue, account_id, events[:half], received_at, skipped),
            *_put_events(queue, account_id, events[half:], received_at, skipped),
        ]


def _log_skipped(account_id: int, skipped: list[SkippedEntity]) -> None:
    for entity in skipped[:MAX_SKIPS_LOGGED]:
        log.warning(
            "webhook entity skipped",
            extra={
                "account_id": account_id,
                "action": entity.action,
                "index": entity.index,
                "contact_id": entity.contact_id,
                "reason": entity.reason[:300],
            },
        )
    if len(skipped) > MAX_SKIPS_LOGGED:
        log.warning(
            "webhook entities skipped",
            extra={"account_id": account_id, "skipped": len(skipped)},
        )
