"""The operator CLI: worker registry, `worker run token-refresh`, accounts and update-tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from shared.crypto import get_secret_box
from shared.db import Database
from shared.jobqueue import get_queue
from shared.jobs import RefreshTokenJob
from shared.workers import DEAD_AFTER
from tests.conftest import reset_caches

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TYPE = "full-sync"  # the registry is shared with the session's stack: only touch our own names


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def limit_restored(db: Database) -> Iterator[None]:
    before = db.fetch_one("SELECT max_workers FROM worker_limits WHERE type = %s", (TYPE,))
    yield
    if before is None:
        db.execute("DELETE FROM worker_limits WHERE type = %s", (TYPE,))
    else:
        db.execute(
            "UPDATE worker_limits SET max_workers = %s WHERE type = %s",
            (before["max_workers"], TYPE),
        )


def names(prefix: str) -> list[dict[str, Any]]:
    result = run("workers", "list", "--json")
    assert result.exit_code == 0, result.output
    return [w for w in json.loads(result.output) if w["name"].startswith(prefix)]


def test_registry_add_list_delete_clear_with_max(db: Database, limit_restored: None) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    # Count what the cap counts: live workers only (a dead one does not hold its slot). Other
    # tests of the session leave dead registrations of this type behind.
    existing = db.fetch_one(
        "SELECT COUNT(*) AS n FROM workers WHERE type = %s "
        "AND (last_heartbeat_at IS NULL OR last_heartbeat_at >= %s)",
        (TYPE, datetime.now(UTC).replace(tzinfo=None) - DEAD_AFTER),
    )
    assert existing is not None
    cap = str(existing["n"] + 2)
    assert run("workers", "add", "-t", TYPE, "-w", f"{prefix}a", "--max", cap).exit_code == 0
    assert run("workers", "add", "-t", TYPE, "-w", f"{prefix}b").exit_code == 0
    over = run("workers", "add", "-t", TYPE, "-w", f"{prefix}c")
    assert over.exit_code == 1 and "already has" in over.output
    rows = names(prefix)
    assert [r["name"] for r in rows] == [f"{prefix}a", f"{prefix}b"]
    assert all(r["state"] == "registered" and r["max_workers"] == int(cap) for r in rows)

    # A worker that stopped beating is shown as dead.
    old = (datetime.now(UTC) - timedelta(minutes=5)).replace(tzinfo=None)
    db.execute(
        "UPDATE workers SET last_heartbeat_at = %s, host = 'h', pid = 1 WHERE name = %s",
        (old, f"{prefix}a"),
    )
    assert {r["name"]: r["state"] for r in names(prefix)}[f"{prefix}a"] == "dead"
    table = run("workers", "list")
    assert table.exit_code == 0 and "dead" in table.output

    assert run("workers", "delete", "-t", TYPE, "-w", f"{prefix}a").exit_code == 0
    assert run("workers", "delete", "-t", TYPE, "-w", f"{prefix}a").exit_code == 1
    assert [r["name"] for r in names(prefix)] == [f"{prefix}b"]
    db.execute("DELETE FROM workers WHERE name = %s", (f"{prefix}b",))


def test_clear_of_one_type(db: Database) -> None:
    kind = "contact-events"
    keep = db.fetch_all("SELECT * FROM workers WHERE type = %s", (kind,))
    assert run("workers", "add", "-t", kind, "-w", f"x{uuid.uuid4().hex[:6]}").exit_code == 0
    result = run("workers", "clear", "-t", kind)
    assert result.exit_code == 0 and f"cleared {len(keep) + 1}" in result.output
    for row in keep:  # give the stack's own registrations back
        db.execute(
            "INSERT INTO workers (type, name, host, pid, started_at, last_heartbeat_at, "
            "jobs_done) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [row[k] for k in ("type", "name", "host", "pid", "started_at", "last_heartbeat_at")]
            + [row["jobs_done"]],
        )


def test_unknown_type_is_refused() -> None:
    result = run("workers", "add", "-t", "nope", "-w", "x")
    assert result.exit_code == 1 and "unknown worker type" in result.output


def test_worker_run_token_refresh_consumes_and_registers(db: Database, beanstalkd: Any) -> None:
    # A job for an account we do not have: the consumer skips it and deletes it.
    get_queue().put(RefreshTokenJob(account_id=999_999_001))
    name = f"w{uuid.uuid4().hex[:6]}"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "amosync"),
            "worker",
            "run",
            "token-refresh",
            "--name",
            name,
            "--max-jobs",
            "1",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = get_queue().tube_stats("token-refresh")
    assert stats["current-jobs-ready"] == 0 and stats["current-jobs-buried"] == 0
    row = db.fetch_one("SELECT * FROM workers WHERE type = 'token-refresh' AND name = %s", (name,))
    assert row is not None and row["jobs_done"] == 1 and row["pid"]
    db.execute("DELETE FROM workers WHERE name = %s", (name,))


def _account(db: Database, *, name: str, expires_in: timedelta, status: str = "active") -> int:
    account_id = 900_000_000 + int(uuid.uuid4().int % 99_999_999)
    db.execute(
        "INSERT INTO accounts (id, name, host, status) VALUES (%s, %s, %s, %s)",
        (account_id, name, f"{name}.amocrm.ru", status),
    )
    box = get_secret_box()
    db.execute(
        "INSERT INTO oauth_tokens (account_id, access_token_enc, refresh_token_enc, expires_at) "
        "VALUES (%s, %s, %s, %s)",
        (
            account_id,
            box.encrypt("at-secret"),
            box.encrypt("rt-secret"),
            (datetime.now(UTC) + expires_in).replace(tzinfo=None),
        ),
    )
    return account_id


def test_accounts_list_shows_expiry_never_tokens(db: Database) -> None:
    name = f"cli{uuid.uuid4().hex[:6]}"
    account_id = _account(db, name=name, expires_in=timedelta(hours=5))
    result = run("accounts", "list", "--json")
    assert result.exit_code == 0, result.output
    assert "at-secret" not in result.output and "rt-secret" not in result.output
    row = next(r for r in json.loads(result.output) if r["id"] == account_id)
    assert row["name"] == name and row["status"] == "active" and row["host"] == f"{name}.amocrm.ru"
    assert row["token_expires_at"].startswith(str((datetime.now(UTC) + timedelta(hours=5)).date()))
    table = run("accounts", "list")  # rich may wrap cells at the runner's 80 columns
    assert table.exit_code == 0 and "at-secret" not in table.output


def test_update_tokens_queues_expiring_accounts(db: Database, beanstalkd: Any) -> None:
    soon = _account(db, name=f"s{uuid.uuid4().hex[:6]}", expires_in=timedelta(minutes=30))
    result = run("update-tokens", "-t", "1")
    assert result.exit_code == 0, result.output
    assert "queued" in result.output
    client = get_queue().connect(watch="token-refresh")
    ids = set()
    while True:
        try:
            job = client.reserve(timeout=0)
        except Exception:
            break
        ids.add(RefreshTokenJob.model_validate_json(job.body).account_id)
        client.delete(job)
    client.close()
    assert soon in ids
    assert run("update-tokens", "--hours", "-1").exit_code == 2


def test_update_tokens_fails_when_queue_is_down(monkeypatch: pytest.MonkeyPatch, db: Any) -> None:
    from cli.devstack import free_port

    monkeypatch.setenv("BEANSTALK_PORT", str(free_port()))
    reset_caches()
    _account(db, name=f"d{uuid.uuid4().hex[:6]}", expires_in=timedelta(minutes=1))
    assert run("update-tokens", "-t", "1").exit_code == 1


def test_accounts_refresh(db: Database, beanstalkd: Any) -> None:
    assert run("accounts", "refresh", "no-such-account").exit_code == 3
    name = f"r{uuid.uuid4().hex[:6]}"
    account_id = _account(db, name=name, expires_in=timedelta(hours=20))
    assert run("accounts", "refresh", name).exit_code == 0
    client = get_queue().connect(watch="token-refresh")
    job = client.reserve(timeout=1)
    assert RefreshTokenJob.model_validate_json(job.body).account_id == account_id
    client.delete(job)
    client.close()
    db.execute("UPDATE accounts SET status = 'disabled' WHERE id = %s", (account_id,))
    assert run("accounts", "refresh", name).exit_code == 1
