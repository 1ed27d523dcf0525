"""Sync runs: one active run per account, its row (status, counts, checkpoint, watermark).

A run is requested by /sync, the widget's connect, the CLI or the scheduler's reconciles and
executed by the full-sync consumer (`shared.consumers.full_sync`), which records its progress
here. A run whose row has not moved for SYNC_RUN_STALE_MINUTES is declared abandoned.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.accounts import reconcile_allowed_sql
from shared.clock import aware_utc, aware_utcnow, iso_utc, utcnow
from shared.db import Database, Row, get_database
from shared.jobqueue import QueueUnavailable, get_queue
from shared.jobs import FullSyncJob
from shared.planner import AccountLoad, Plan, PlannerConfig, make_plan
from shared.settings import get_settings

log = logging.getLogger(__name__)

RunKind = Literal["full", "incremental"]

QUEUED, RUNNING, DONE, FAILED, SKIPPED = "queued", "running", "done", "failed", "skipped"
ACTIVE_STATUSES = (QUEUED, RUNNING)


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
            finish_run(db, run_id, FAILED, "could not queue the run: beanstalkd unavailable")
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
    """Queue a reconcile run for every active, connected account now; returns how many were queued.

    The operator's "reconcile everything" (and the tests'); the scheduler asks
    `enqueue_due_reconciles` instead, which follows the planner. An account without a finished
    run has no watermark yet: it gets a full run instead.
    """
    if mode not in ("incremental", "full"):
        raise ValueError(f"unknown reconcile mode {mode!r}")
    db = get_database()
    queued = 0
    rows = _reconcilable_accounts(db)
    for row in rows:
        account_id = int(row["id"])
        kind: RunKind = "full"
        if mode == "incremental" and account_watermark(db, account_id) is not None:
            kind = "incremental"
        if request_sync(db, account_id, kind=kind, requested_by="scheduler").created:
            queued += 1
    log.info("reconciles queued", extra={"mode": mode, "accounts": len(rows), "queued": queued})
    return queued


# Evidence that an account's subscription works stays good this long: an event received, or a
# subscription check (shared/webhook_health.py, every RECONCILE_HEALTHY_INTERVAL_MINUTES) that
# found the hook enabled. Longer than the check interval, so one failed check flips nothing.
WEBHOOK_HEALTHY_WINDOW = timedelta(hours=24)

# "Webhooks healthy" for the planner (a constant SQL expression over `a` and `h`, see below).
# The rule, in order:
# 1. re-subscribed and no event received since (a minute that started after the re-subscription)
#    → unhealthy: we just found the hook missing or disabled; until amoCRM delivers again, the
#    only proof that it works, the account is polled every RECONCILE_INTERVAL_MINUTES;
# 2. an event received within WEBHOOK_HEALTHY_WINDOW → healthy;
# 3. the last check within WEBHOOK_HEALTHY_WINDOW found it enabled → healthy: a quiet account
#    with a working hook has no events to show, and polling it every 15 minutes is waste;
# 4. otherwise (never checked, checks failing, no events) → unhealthy.
_WEBHOOKS_HEALTHY_SQL = (
    "CASE WHEN h.resubscribed_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM event_minutes e "
    " WHERE e.account_id = a.id AND e.minute > h.resubscribed_at) THEN 0 "
    "WHEN EXISTS (SELECT 1 FROM event_minutes e WHERE e.account_id = a.id "
    " AND e.minute >= %(since)s) THEN 1 "
    "WHEN h.confirmed_at >= %(since)s THEN 1 ELSE 0 END"
)


def _reconcilable_accounts(db: Database) -> list[Row]:
    """Active, connected accounts whose reconciles are not paused, with what the planner needs.

    Also what the webhook health check needs: whether the account has a subscription of ours
    (a webhook secret) and when it was last checked.
    """
    # Accounts whose reconciles are paused (amoCRM answered 402: unpaid) are left out until the
    # pause ends; a run requested by hand still goes.
    allowed = reconcile_allowed_sql("a")  # a constant condition of ours, no input in it
    return db.fetch_all(
        "SELECT a.id, "  # noqa: S608
        "(SELECT MAX(r.contacts_seen) FROM sync_runs r WHERE r.account_id = a.id "
        " AND r.kind = 'full' AND r.status = 'done') AS contacts, "
        "(SELECT MAX(r.created_at) FROM sync_runs r WHERE r.account_id = a.id "
        " AND r.kind = 'full') AS last_full, "
        "(SELECT MAX(r.created_at) FROM sync_runs r WHERE r.account_id = a.id) AS last_run, "
        f"{_WEBHOOKS_HEALTHY_SQL} AS webhooks_healthy, "
        "a.webhook_secret_enc IS NOT NULL AS webhook_subscribed, "
        "h.checked_at AS webhook_checked_at "
        "FROM accounts a JOIN unisender_settings u ON u.account_id = a.id "
        "LEFT JOIN webhook_health h ON h.account_id = a.id "
        f"WHERE a.status = 'active' AND u.list_id IS NOT NULL AND {allowed} ORDER BY a.id",
        {"since": utcnow() - WEBHOOK_HEALTHY_WINDOW},
    )


@dataclass(frozen=True)
class ReconcilePlan:
    """The reconcilable accounts, their planner loads and the plan made for them."""

    rows: list[Row]
    loads: dict[int, AccountLoad]
    plan: Plan


def reconcile_plan(db: Database) -> ReconcilePlan:
    """Plan the reconcilable accounts as they are now (the scheduler's tick, the webhook check)."""
    rows = _reconcilable_accounts(db)
    loads = {
        int(row["id"]): AccountLoad(
            int(row["id"]), int(row["contacts"] or 0), bool(row["webhooks_healthy"])
        )
        for row in rows
    }
    plan = make_plan(list(loads.values()), PlannerConfig.from_settings(get_settings()))
    return ReconcilePlan(rows=rows, loads=loads, plan=plan)


def _stored_time(value: datetime | None) -> datetime | None:
    return aware_utc(value) if value is not None else None


def enqueue_due_reconciles(
    now: datetime | None = None, *, account_ids: Collection[int] | None = None
) -> dict[str, int]:
    """Queue the reconciles the planner says are due now (the scheduler's tick).

    Each account gets its full reconcile once per planned period at its own slot of the day, and
    an incremental one when its poll interval (short if its webhooks look lost, long if healthy)
    has passed since its last run. Returns counts: accounts, fulls and incrementals queued.
    `account_ids` limits what is queued (the plan still covers every account): a test asks for
    its own accounts and leaves the others in a shared database alone.
    """
    db = get_database()
    now = aware_utc(now) if now is not None else aware_utcnow()
    planned = reconcile_plan(db)
    rows, loads, plan = planned.rows, planned.loads, planned.plan
    if account_ids is not None:
        wanted = set(account_ids)
        rows = [row for row in rows if int(row["id"]) in wanted]
    counts = {"accounts": len(rows), "full": 0, "incremental": 0}
    for row in rows:
        load = loads[int(row["id"])]
        kind: RunKind | None = None
        if plan.full_due(load.account_id, _stored_time(row["last_full"]), now):
            kind = "full"
        elif plan.poll_due(load, _stored_time(row["last_run"]), now):
            has_watermark = account_watermark(db, load.account_id) is not None
            kind = "incremental" if has_watermark else "full"
        if kind and request_sync(db, load.account_id, kind=kind, requested_by="scheduler").created:
            counts[kind] += 1
    log.info(
        "due reconciles queued",
        extra={
            **counts,
            "stretch": round(plan.stretch, 2),
            "planned_per_day": plan.planned_per_day,
        },
    )
    return counts


def finish_run(db: Database, run_id: int, status: str, error: str | None) -> None:
    db.execute(
        "UPDATE sync_runs SET status = %s, error = %s, finished_at = %s WHERE id = %s",
        (status, error[:1000] if error else None, utcnow(), run_id),
    )
    log.log(
        logging.INFO if status == DONE else logging.WARNING,
        "sync run finished",
        extra={"run_id": run_id, "status": status, "error": (error or "")[:300]},
    )


def record_run_error(db: Database, run_id: int, reason: str) -> None:
    db.execute("UPDATE sync_runs SET error = %s WHERE id = %s", (reason[:1000], run_id))
