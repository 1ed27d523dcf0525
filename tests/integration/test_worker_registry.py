"""The worker registry: maxima, dead workers, and delete-worker stopping a running consumer."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import Database
from shared.jobqueue import Consumer, ConsumerOptions, get_queue
from shared.jobs import RefreshTokenJob
from shared.workers import RegistryError, WorkerRegistry

pytestmark = pytest.mark.integration


def _type_clean(db: Database) -> WorkerRegistry:
    registry = WorkerRegistry(db)
    registry.clear("token-refresh")
    return registry


def test_maximum_per_type_is_enforced_but_dead_workers_free_their_slot(db: Database) -> None:
    registry = _type_clean(db)
    registry.add("token-refresh", "a", max_workers=2)
    registry.add("token-refresh", "b")
    with pytest.raises(RegistryError, match="already has 2 of 2"):
        registry.add("token-refresh", "c")
    stale = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
    db.execute(
        "UPDATE workers SET last_heartbeat_at = %s WHERE type = 'token-refresh' AND name = 'a'",
        (stale,),
    )
    registry.add("token-refresh", "c")
    states = {r["name"]: r["state"] for r in registry.list() if r["type"] == "token-refresh"}
    assert states == {"a": "dead", "b": "registered", "c": "registered"}
    registry.clear("token-refresh")
    db.execute("DELETE FROM worker_limits WHERE type = 'token-refresh'")


def test_deleting_a_running_worker_stops_it(db: Database, beanstalkd) -> None:  # type: ignore[no-untyped-def]
    registry = _type_clean(db)
    name = f"w-{uuid.uuid4().hex[:6]}"
    registry.started("token-refresh", name)
    consumer = Consumer(
        get_queue(),
        RefreshTokenJob,
        lambda batch: None,
        options=ConsumerOptions(heartbeat_seconds=0.2),
        heartbeat=lambda done: registry.heartbeat("token-refresh", name, done),
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    assert registry.delete("token-refresh", name)
    thread.join(timeout=10)
    assert not thread.is_alive()
