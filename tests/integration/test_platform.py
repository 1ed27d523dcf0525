"""The platform core against real MySQL and beanstalkd."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest

from shared.crypto import SecretBox, get_secret_box
from shared.db import Database, get_database
from shared.jobqueue import (
    Consumer,
    ConsumerOptions,
    Delivery,
    PoisonJob,
    RetryBudget,
    RetryJob,
    get_queue,
)
from shared.jobs import RefreshTokenJob

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_migrations_create_schema_and_are_idempotent(mysql_database: str) -> None:
    from shared.migrate import apply_migrations
    from shared.settings import get_settings

    assert apply_migrations(get_settings()) == []  # already applied by the fixture
    tables = {
        r["t"]
        for r in get_database().fetch_all(
            "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = %s",
            (mysql_database,),
        )
    }
    assert {
        "accounts",
        "oauth_tokens",
        "unisender_settings",
        "contacts",
        "contact_emails",
        "list_members",
        "sync_runs",
        "workers",
        "parked_jobs",
    } <= tables


def test_secret_round_trips_and_is_not_plaintext(db: Database) -> None:
    box = get_secret_box()
    token = box.encrypt("refresh-token-value")
    assert b"refresh-token-value" not in token
    assert box.decrypt(token) == "refresh-token-value"


def test_key_rotation_keeps_old_secrets_readable() -> None:
    old = SecretBox("old-passphrase-0123456789")
    stored = old.encrypt("api-key")
    rotated = SecretBox("new-passphrase-9876543210,old-passphrase-0123456789")
    assert rotated.decrypt(stored) == "api-key"
    assert SecretBox("new-passphrase-9876543210").decrypt(rotated.rotate(stored)) == "api-key"


def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as cur:
        cur.execute("INSERT INTO worker_limits (type, max_workers) VALUES (%s, %s)", ("rb", 1))
        raise RuntimeError("boom")
    assert db.fetch_one("SELECT * FROM worker_limits WHERE type = 'rb'") is None


def test_reconnects_after_connection_is_killed(db: Database) -> None:
    conn_id = db.fetch_one("SELECT CONNECTION_ID() AS id")["id"]
    admin = pymysql.connect(
        host=db._params["host"],
        port=db._params["port"],
        user=db._params["user"],
        password=db._params["password"],
    )
    with admin.cursor() as cur:
        cur.execute(f"KILL {int(conn_id)}")
    admin.close()
    assert db.fetch_one("SELECT 1 AS ok") == {"ok": 1}
    assert db.fetch_one("SELECT CONNECTION_ID() AS id")["id"] != conn_id
    with db.transaction() as cur:
        cur.execute("SELECT 1 AS ok")


def _consumer(handler, **opts) -> Consumer[RefreshTokenJob]:  # type: ignore[no-untyped-def]
    budget = RetryBudget(max_attempts=3, backoff_base=0.01, backoff_max=0.01)
    options = ConsumerOptions(budget=budget, **opts)
    return Consumer(get_queue(), RefreshTokenJob, handler, options=options)


def test_job_put_by_another_process_is_consumed(beanstalkd, db) -> None:  # type: ignore[no-untyped-def]
    script = (
        "from shared.jobqueue import get_queue; from shared.jobs import RefreshTokenJob;"
        "print(get_queue().put(RefreshTokenJob(account_id=42, request_id='rid-1')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert int(out.stdout.strip()) > 0
    seen: list[tuple[int, str | None]] = []

    def handle(batch: list[Delivery[RefreshTokenJob]]) -> None:
        seen.extend((d.job.account_id, d.job.request_id) for d in batch)

    assert _consumer(handle).run(max_jobs=1, idle_exit_seconds=5) == 1
    assert seen == [(42, "rid-1")]
    assert get_queue().tube_stats("token-refresh")["current-jobs-ready"] == 0


def test_transient_failure_is_retried_then_succeeds(beanstalkd) -> None:  # type: ignore[no-untyped-def]
    get_queue().put(RefreshTokenJob(account_id=7))
    attempts: list[int] = []

    def handle(batch: list[Delivery[RefreshTokenJob]]) -> None:
        attempts.append(batch[0].attempts)
        if len(attempts) < 3:
            raise RetryJob("vendor down", delay=0)

    _consumer(handle).run(max_jobs=1, idle_exit_seconds=10)
    assert attempts == [1, 2, 3]


def test_poison_job_is_buried_with_reason(beanstalkd, db) -> None:  # type: ignore[no-untyped-def]
    from shared.workers import record_buried

    get_queue().put(RefreshTokenJob(account_id=9))

    def handle(batch: list[Delivery[RefreshTokenJob]]) -> None:
        raise PoisonJob("account 9 does not exist")

    consumer = _consumer(handle)
    consumer.on_bury = record_buried
    consumer.run(idle_exit_seconds=2)
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 1
    row = db.fetch_one("SELECT * FROM parked_jobs WHERE account_id = 9 ORDER BY buried_at DESC")
    assert row is not None and "does not exist" in row["reason"]
    assert get_queue().kick("token-refresh") == 1
    assert get_queue().tube_stats("token-refresh")["current-jobs-ready"] == 1


def test_gives_up_after_max_attempts_and_buries(beanstalkd) -> None:  # type: ignore[no-untyped-def]
    get_queue().put(RefreshTokenJob(account_id=11))
    calls: list[int] = []

    def handle(batch: list[Delivery[RefreshTokenJob]]) -> None:
        calls.append(1)
        raise ValueError("always broken")

    _consumer(handle).run(idle_exit_seconds=6)
    assert len(calls) == 3
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 1


def test_malformed_body_is_buried_without_calling_handler(beanstalkd) -> None:  # type: ignore[no-untyped-def]
    client = get_queue().connect(use="token-refresh")
    client.put('{"account_id": "not-a-number"}')
    client.close()
    calls: list[int] = []
    _consumer(lambda batch: calls.append(1)).run(idle_exit_seconds=2)
    assert calls == []
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 1


def test_queue_unavailable_is_reported(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cli.devstack import free_port
    from shared.jobqueue import Queue, QueueUnavailable

    queue = Queue("127.0.0.1", free_port())
    started = time.monotonic()
    with pytest.raises(QueueUnavailable):
        queue.put(RefreshTokenJob(account_id=1))
    assert time.monotonic() - started < 5


def test_transient_failures_retry_past_max_attempts_until_the_time_budget(beanstalkd) -> None:  # type: ignore[no-untyped-def]
    get_queue().put(RefreshTokenJob(account_id=13))
    calls: list[int] = []

    def handle(batch: list[Delivery[RefreshTokenJob]]) -> None:
        calls.append(batch[0].attempts)
        raise RetryJob("Unisender down", delay=0)

    options = ConsumerOptions(
        budget=RetryBudget(max_attempts=3, seconds=2, backoff_base=0.01, backoff_max=0.01)
    )
    Consumer(get_queue(), RefreshTokenJob, handle, options=options).run(idle_exit_seconds=4)
    # An outage is not a bug: it outlives the attempt limit, and only the budget buries it.
    assert len(calls) > 3
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 1
