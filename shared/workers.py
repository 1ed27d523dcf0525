"""Queue-triggered consumers: their types, the worker registry with heartbeats, and the runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.clock import utcnow
from shared.consumers.contact_events import handle_event_batch
from shared.consumers.full_sync import handle_sync_batch
from shared.consumers.token_refresh import handle_refresh_batch
from shared.db import Database, get_database
from shared.jobqueue import Consumer, ConsumerOptions, RetryBudget, get_queue, hostname
from shared.jobs import ContactEventsJob, FullSyncJob, Job, RefreshTokenJob
from shared.settings import get_settings

log = logging.getLogger(__name__)

# A worker whose heartbeat is older than this is shown as dead.
DEAD_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class WorkerType:
    """A consumer type: the job it takes, its handler and its batching.

    The handler is bound by import, not by a "module:attr" string: a rename fails at import
    time and in mypy instead of when a worker starts.
    """

    job: type[Job]
    handler: Callable[[list[Any]], None]
    batch_size: int = 1
    linger_seconds: float = 0.0


WORKER_TYPES: dict[str, WorkerType] = {
    "token-refresh": WorkerType(RefreshTokenJob, handle_refresh_batch),
    # Drains up to 500 rows' worth of events (or a short linger) into one importContacts call.
    "contact-events": WorkerType(
        ContactEventsJob,
        handle_event_batch,
        batch_size=200,
        linger_seconds=1.0,
    ),
    "full-sync": WorkerType(FullSyncJob, handle_sync_batch),
}


class RegistryError(Exception):
    """A registry rule refused the request (unknown type, over the maximum)."""


class WorkerRegistry:
    """The original's add-worker / delete-worker / clear-workers, with heartbeats."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def check_type(worker_type: str) -> None:
        if worker_type not in WORKER_TYPES:
            known = ", ".join(sorted(WORKER_TYPES))
            raise RegistryError(f"unknown worker type {worker_type!r} (known: {known})")

    def add(self, worker_type: str, name: str, *, max_workers: int | None = None) -> None:
        """Register a worker slot; refused when the type already has its maximum."""
        self.check_type(worker_type)
        with self.db.transaction() as cur:
            if max_workers is not None:
                cur.execute(
                    "INSERT INTO worker_limits (type, max_workers) VALUES (%s, %s) "
                    "ON DUPLICATE KEY UPDATE max_workers = VALUES(max_workers)",
                    (worker_type, max_workers),
                )
            cur.execute(
                "SELECT max_workers FROM worker_limits WHERE type = %s FOR UPDATE", (worker_type,)
            )
            limit = cur.fetchone()
            # A worker whose heartbeat stopped does not hold its slot: its replacement may start.
            cur.execute(
                "SELECT COUNT(*) AS n FROM workers WHERE type = %s AND name <> %s "
                "AND (last_heartbeat_at IS NULL OR last_heartbeat_at >= %s)",
                (worker_type, name, utcnow() - DEAD_AFTER),
            )
            count_row = cur.fetchone()
            count = count_row["n"] if count_row else 0
            if limit is not None and count >= limit["max_workers"]:
                raise RegistryError(
                    f"type {worker_type!r} already has {count} of {limit['max_workers']} workers"
                )
            cur.execute(
                "INSERT INTO workers (type, name) VALUES (%s, %s) "
                "ON DUPLICATE KEY UPDATE name = name",
                (worker_type, name),
            )

    def delete(self, worker_type: str, name: str) -> bool:
        return (
            self.db.execute(
                "DELETE FROM workers WHERE type = %s AND name = %s", (worker_type, name)
            )
            > 0
        )

    def clear(self, worker_type: str | None = None) -> int:
        if worker_type is None:
            return self.db.execute("DELETE FROM workers")
        return self.db.execute("DELETE FROM workers WHERE type = %s", (worker_type,))

    def started(self, worker_type: str, name: str) -> None:
        self.add(worker_type, name)
        self.db.execute(
            "UPDATE workers SET host = %s, pid = %s, started_at = %s, last_heartbeat_at = %s "
            "WHERE type = %s AND name = %s",
            (hostname(), os.getpid(), utcnow(), utcnow(), worker_type, name),
        )

    def heartbeat(self, worker_type: str, name: str, jobs_done: int) -> bool:
        """Record that the worker lives; False once an operator deleted it (it should stop)."""
        row = self.db.fetch_one(
            "SELECT 1 AS present FROM workers WHERE type = %s AND name = %s", (worker_type, name)
        )
        if row is None:
            return False
        self.db.execute(
            "UPDATE workers SET last_heartbeat_at = %s, jobs_done = %s "
            "WHERE type = %s AND name = %s",
            (utcnow(), jobs_done, worker_type, name),
        )
        return True

    def list(self) -> list[dict[str, Any]]:
        rows = self.db.fetch_all(
            "SELECT w.type, w.name, w.host, w.pid, w.started_at, w.last_heartbeat_at, w.jobs_done, "
            "l.max_workers FROM workers w LEFT JOIN worker_limits l ON l.type = w.type "
            "ORDER BY w.type, w.name"
        )
        now = utcnow()
        for row in rows:
            beat = row["last_heartbeat_at"]
            if beat is None:
                row["state"] = "registered"
            else:
                row["state"] = "alive" if now - beat <= DEAD_AFTER else "dead"
        return rows


def record_buried(tube: str, job_id: int, reason: str, body: str) -> None:
    """Keep a buried job's reason (and account) where the CLI and the status page show it."""
    account_id: int | None = None
    try:
        import json

        account_id = int(json.loads(body).get("account_id")) or None
    except (ValueError, TypeError, AttributeError):
        account_id = None
    get_database().execute(
        "INSERT INTO parked_jobs (tube, job_id, account_id, reason, body) "
        "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE reason = VALUES(reason), "
        "buried_at = CURRENT_TIMESTAMP(6)",
        (tube, job_id, account_id, reason[:2000], body[:1_000_000]),
    )


def build_consumer(type_name: str, *, name: str | None = None) -> Consumer[Any]:
    """A consumer for one worker type, registered and heart-beating under `name`."""
    WorkerRegistry.check_type(type_name)
    worker_type = WORKER_TYPES[type_name]
    settings = get_settings()
    registry = WorkerRegistry(get_database())
    worker_name = name or f"{hostname()}-{os.getpid()}"
    registry.started(type_name, worker_name)
    options = ConsumerOptions(
        budget=RetryBudget.from_settings(settings),
        batch_size=worker_type.batch_size,
        linger_seconds=worker_type.linger_seconds,
    )
    return Consumer(
        get_queue(),
        worker_type.job,
        worker_type.handler,
        options=options,
        heartbeat=lambda done: registry.heartbeat(type_name, worker_name, done),
        on_bury=record_buried,
    )
