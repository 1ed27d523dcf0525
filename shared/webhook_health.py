"""Webhook health: is each account's amoCRM subscription still there and enabled?

amoCRM disables a hook that got more than 100 invalid answers in 2 hours (reference §4.2; an
outage of ours is enough) and tells only the account's admins; an admin can also delete it.
Either way the events stop and nothing but the reconcile polls would notice. So on the
scheduler's reconcile tick each connected account's subscription is read, at most once per
`Plan.webhook_check_interval` (RECONCILE_HEALTHY_INTERVAL_MINUTES, stretched like every interval
when the IP budget is short): one `GET /api/v4/webhooks?filter[destination]=<our URL>` through the
account's own client, so the shared budgets and 403 holds apply to it like to any request.

A missing, disabled or changed subscription is re-subscribed, the re-subscription is recorded in
`webhook_health` (when, why), and an incremental reconcile is queued for the gap: the changes
amoCRM did not deliver meanwhile. The planner reads the same row (shared/sync_runs.py): a
re-subscribed account is polled often until events arrive again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.accounts import amocrm_failures_recorded, get_account
from shared.amocrm.client import AmoCrmClient
from shared.amocrm.errors import AmoCrmError
from shared.amocrm.models import Webhook
from shared.clock import aware_utc, aware_utcnow, utcnow
from shared.db import Database, get_database
from shared.jobqueue import QueueUnavailable
from shared.sync_runs import RunKind, account_watermark, reconcile_plan, request_sync
from shared.tokens import amocrm_client_for
from shared.webhook_intake import WEBHOOK_EVENTS, load_webhook_secret, webhook_destination

log = logging.getLogger(__name__)

Finding = Literal["enabled", "missing", "disabled", "changed", "error"]

# Checks one tick may make, the longest-unchecked accounts first; the rest wait for the next tick
# (5 minutes later). Bounds how long a tick holds the scheduler when the IP budget is tight: each
# check waits for its slot in the shared throttle. At the default 6 h interval this covers
# 200 x 72 ticks = 14,400 accounts; beyond that the planner stretches the interval anyway.
CHECKS_PER_TICK = 200

REQUESTED_BY = "webhook-health"


def inspect(hook: Webhook | None) -> Finding:
    """What a subscription of ours, as amoCRM lists it, needs: nothing, or a re-subscription."""
    if hook is None:
        return "missing"
    if hook.disabled:
        return "disabled"
    if set(hook.settings) != set(WEBHOOK_EVENTS):
        return "changed"
    return "enabled"


def resubscribe(amo: AmoCrmClient, destination: str, current: Webhook | None) -> None:
    """Subscribe `destination` to our events afresh, deleting the listed one first.

    Whether a second POST for an existing destination updates it or adds a duplicate, and
    whether it re-enables a disabled hook, is unverified (reference §4.1; the docs say an admin
    re-enables one in the settings). Delete-then-create is the safe reading: one fresh, enabled
    hook either way.
    """
    if current is not None:
        amo.delete_webhook(destination)
    amo.subscribe_webhook(destination, list(WEBHOOK_EVENTS))


@dataclass(frozen=True)
class CheckResult:
    account_id: int
    found: Finding
    resubscribed: bool
    gap_run_id: int | None = None
    error: str | None = None


def check_account(db: Database, account_id: int) -> CheckResult:
    """Read one account's subscription; re-subscribe it and queue a gap reconcile if needed."""
    account = get_account(db, account_id)
    secret = load_webhook_secret(db, account_id)
    if account is None or secret is None:
        return CheckResult(account_id, "error", False, error="no account or no subscription")
    destination = webhook_destination(account_id, secret)
    amo = amocrm_client_for(account, db=db, bulk=True)
    try:
        # A 401 that survives the refresh stops the account, a 402 pauses its reconciles, a 403
        # becomes a hold, exactly as for the reconciles themselves.
        with amocrm_failures_recorded(db, account_id):
            mine = next(
                (h for h in amo.list_webhooks(destination) if h.destination == destination), None
            )
            found = inspect(mine)
            if found != "enabled":
                resubscribe(amo, destination, mine)
    except AmoCrmError as exc:
        # Not the message: a network error's text carries the request URL, and ours has the
        # destination (with its secret) in the query. The class and status say enough.
        answer = f"HTTP {exc.status}" if exc.status else "no answer"
        error = f"{type(exc).__name__} ({answer}): {exc.summary}"
        _record(db, account_id, "error", error=error)
        log.warning(
            "webhook check failed", extra={"account_id": account_id, "error": type(exc).__name__}
        )
        return CheckResult(account_id, "error", False, error=error)
    if found == "enabled":
        _record(db, account_id, found)
        return CheckResult(account_id, found, False)
    _record(db, account_id, found, resubscribed=True)
    log.warning("webhook re-subscribed", extra={"account_id": account_id, "found": found})
    run_id = _queue_gap_reconcile(db, account_id)
    if run_id is not None:
        db.execute(
            "UPDATE webhook_health SET gap_run_id = %s WHERE account_id = %s", (run_id, account_id)
        )
    return CheckResult(account_id, found, True, gap_run_id=run_id)


_REASONS: dict[Finding, str] = {
    "missing": "our subscription was missing from amoCRM's list",
    "disabled": "amoCRM had disabled our subscription (failed deliveries)",
    "changed": "our subscription listened to other events",
}


def _record(
    db: Database,
    account_id: int,
    found: Finding,
    *,
    error: str | None = None,
    resubscribed: bool = False,
) -> None:
    now = utcnow()
    confirmed = now if found == "enabled" else None
    again = now if resubscribed else None
    reason = _REASONS.get(found) if resubscribed else None
    db.execute(
        "INSERT INTO webhook_health (account_id, checked_at, found, error, confirmed_at, "
        "resubscribed_at, resubscribe_reason, resubscribes) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON DUPLICATE KEY UPDATE checked_at = VALUES(checked_at), found = VALUES(found), "
        "error = VALUES(error), confirmed_at = COALESCE(VALUES(confirmed_at), confirmed_at), "
        "resubscribed_at = COALESCE(VALUES(resubscribed_at), resubscribed_at), "
        "resubscribe_reason = COALESCE(VALUES(resubscribe_reason), resubscribe_reason), "
        "gap_run_id = IF(VALUES(resubscribed_at) IS NULL, gap_run_id, NULL), "
        "resubscribes = resubscribes + VALUES(resubscribes)",
        (account_id, now, found, error, confirmed, again, reason, 1 if resubscribed else 0),
    )


def _queue_gap_reconcile(db: Database, account_id: int) -> int | None:
    """An incremental reconcile from the watermark (a full one if the account has none yet)."""
    kind: RunKind = "incremental" if account_watermark(db, account_id) is not None else "full"
    try:
        return request_sync(db, account_id, kind=kind, requested_by=REQUESTED_BY).run_id
    except QueueUnavailable:
        # The re-subscription stands and is recorded; the account now counts as unhealthy, so
        # the planner polls it every RECONCILE_INTERVAL_MINUTES and that poll covers the gap.
        log.warning("could not queue the gap reconcile", extra={"account_id": account_id})
        return None


def check_due_webhooks(
    now: datetime | None = None, *, account_ids: Collection[int] | None = None
) -> dict[str, int]:
    """The scheduler's tick: check the subscriptions not checked for a check interval.

    `account_ids` keeps the tick to those accounts (tests share one database with other tests'
    accounts, whose amoCRM is not theirs to call). Returns counts: accounts due, checked,
    re-subscribed, failed checks.
    """
    db = get_database()
    now = aware_utc(now) if now is not None else aware_utcnow()
    planned = reconcile_plan(db)
    interval = planned.plan.webhook_check_interval
    due = [
        row
        for row in planned.rows
        if row["webhook_subscribed"]
        and (account_ids is None or int(row["id"]) in account_ids)
        and (
            row["webhook_checked_at"] is None
            or now - aware_utc(row["webhook_checked_at"]) >= interval
        )
    ]
    # Never-checked accounts first, then the longest unchecked (stored times are naive UTC).
    due.sort(key=lambda r: r["webhook_checked_at"] or datetime.min)
    counts = {"due": len(due), "checked": 0, "resubscribed": 0, "failed": 0}
    for row in due[:CHECKS_PER_TICK]:
        result = check_account(db, int(row["id"]))
        counts["checked"] += 1
        counts["resubscribed"] += int(result.resubscribed)
        counts["failed"] += int(result.found == "error")
    log.info("webhook checks done", extra=counts)
    return counts
