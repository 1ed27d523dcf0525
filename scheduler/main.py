"""APScheduler process: token refresh and reconciles, each run executed once across replicas."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pymysql
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from shared.db import Database, get_database
from shared.jobqueue import hostname
from shared.logs import configure_logging
from shared.settings import Settings, get_settings
from shared.sync_runs import enqueue_due_reconciles
from shared.tokens import enqueue_expiring_refreshes
from shared.webhook_health import check_due_webhooks

log = logging.getLogger("amosync.scheduler")


def claim_run(db: Database, job_name: str, run_key: str) -> bool:
    """Insert the (job, run) row; only the replica whose insert wins runs the job."""
    try:
        db.execute(
            "INSERT INTO scheduler_runs (job_name, run_key, host) VALUES (%s, %s, %s)",
            (job_name, run_key, hostname()),
        )
    except pymysql.err.IntegrityError:
        return False
    return True


def release_run(db: Database, job_name: str, run_key: str) -> None:
    """Give a claimed slot back, so another replica (or the next firing) may run it."""
    db.execute(
        "DELETE FROM scheduler_runs WHERE job_name = %s AND run_key = %s AND host = %s",
        (job_name, run_key, hostname()),
    )


def run_once(job_name: str, interval_seconds: int, action: Callable[[], Any]) -> Any:
    """Run `action` unless another replica already ran this interval's slot."""
    slot = int(datetime.now(UTC).timestamp()) // interval_seconds
    db = get_database()
    if not claim_run(db, job_name, str(slot)):
        log.info("run already claimed by another replica", extra={"job": job_name, "slot": slot})
        return None
    try:
        result = action()
    except Exception:
        # The claim is taken before the action so replicas never both run it; a failed action
        # (beanstalkd down, MySQL blip) must not also keep the slot, or the interval is lost.
        log.exception("scheduled run failed; slot released", extra={"job": job_name, "slot": slot})
        try:
            release_run(db, job_name, str(slot))
        except Exception:
            log.warning("could not release the slot", extra={"job": job_name}, exc_info=True)
        raise
    log.info("scheduled run done", extra={"job": job_name, "slot": slot, "result": result})
    return result


def refresh_tokens_job(settings: Settings) -> Any:
    return run_once(
        "refresh-tokens",
        settings.token_refresh_interval_minutes * 60,
        lambda: enqueue_expiring_refreshes(
            hours=settings.token_refresh_horizon_hours,
            every_minutes=settings.token_refresh_interval_minutes,
        ),
    )


# How often the scheduler asks the planner which reconciles are due; the intervals themselves come
# from the planner (shared/planner.py), this only bounds how late a due run starts.
RECONCILE_TICK_MINUTES = 5


def reconcile_job(settings: Settings) -> Any:
    tick = min(RECONCILE_TICK_MINUTES, settings.reconcile_interval_minutes)
    # Webhook subscriptions first (each account at most once per check interval, see
    # shared/webhook_health.py): an account found missing/disabled is re-subscribed and counts as
    # unhealthy in the plan made just after. Its own claim, and its failure must not cost the
    # reconciles their tick.
    try:
        run_once("webhook-health", tick * 60, check_due_webhooks)
    except Exception:  # run_once logged it with its traceback
        log.warning("webhook health check failed; the reconciles go on")
    return run_once("reconcile", tick * 60, enqueue_due_reconciles)


def build_scheduler(settings: Settings) -> BlockingScheduler:
    scheduler = BlockingScheduler(timezone=UTC)
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 300}
    scheduler.add_job(
        refresh_tokens_job,
        IntervalTrigger(minutes=settings.token_refresh_interval_minutes),
        args=[settings],
        id="refresh-tokens",
        next_run_time=datetime.now(UTC),
        **common,
    )
    scheduler.add_job(
        reconcile_job,
        IntervalTrigger(minutes=min(RECONCILE_TICK_MINUTES, settings.reconcile_interval_minutes)),
        args=[settings],
        id="reconcile",
        next_run_time=datetime.now(UTC),
        **common,
    )
    return scheduler


def main() -> None:
    settings = get_settings()
    configure_logging("scheduler", settings.log_level)
    scheduler = build_scheduler(settings)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("scheduler started")
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        scheduler.start()
