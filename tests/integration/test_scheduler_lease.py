"""Two scheduler processes side by side: only the lease holder schedules; the other takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.db import Database
from shared.lease import Lease

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def schedulers(
    db: Database, beanstalkd: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    # A fresh token-refresh interval: a slot no earlier run has claimed (it fires at start).
    monkeypatch.setenv("TOKEN_REFRESH_INTERVAL_MINUTES", str(100_000 + uuid.uuid4().int % 100_000))
    monkeypatch.setenv("TOKEN_REFRESH_HORIZON_HOURS", "1")
    monkeypatch.setenv("SCHEDULER_LEASE_SECONDS", str(LEASE_SECONDS))
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def holder_pid(db: Database, lease_name: str) -> int | None:
    row = db.fetch_one(
        "SELECT holder FROM leases WHERE name = %s AND expires_at >= NOW(6)", (lease_name,)
    )
    return int(row["holder"].split(":")[1]) if row else None


def test_one_of_two_schedulers_schedules_and_the_other_takes_over(
    db: Database, schedulers: Callable[[str], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    lease_name = f"scheduler:{os.environ['BEANSTALK_TUBE_PREFIX']}"
    first, second = schedulers("a"), schedulers("b")
    logs = {first.pid: tmp_path / "a.log", second.pid: tmp_path / "b.log"}
    leader_pid = wait_for(lambda: holder_pid(db, lease_name), 30, "a lease holder")
    assert leader_pid in logs
    standby_pid = second.pid if leader_pid == first.pid else first.pid
    leader = first if leader_pid == first.pid else second
    standby = second if leader is first else first

    # The holder ran the token refresh that fires at start; the standby never tried to.
    wait_for(lambda: "scheduled run done" in logs[leader_pid].read_text(), 30, "the first run")
    time.sleep(LEASE_SECONDS)  # a full term: renewals keep the lease where it is
    assert holder_pid(db, lease_name) == leader_pid
    standby_log = logs[standby_pid].read_text()
    assert "scheduled run done" not in standby_log
    assert "run already claimed" not in standby_log, "the standby scheduled a run"
    rows = db.fetch_all("SELECT host FROM scheduler_runs WHERE job_name = 'refresh-tokens'")
    assert rows

    # The holder dies without releasing: the standby takes over once the lease expires.
    leader.send_signal(signal.SIGKILL)
    leader.wait(10)
    died = time.monotonic()
    wait_for(lambda: holder_pid(db, lease_name) == standby_pid, 3 * LEASE_SECONDS, "takeover")
    assert time.monotonic() - died <= 2 * LEASE_SECONDS

    # A clean stop releases the lease at once.
    standby.send_signal(signal.SIGTERM)
    standby.wait(15)
    assert holder_pid(db, lease_name) is None


def test_lease_survives_a_reconnect_and_expires_without_renewal(db: Database) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    one, other = Lease(db, name, 2), Lease(db, name, 2)
    assert one.renew() and not other.renew()
    generation = one.generation
    # A dropped MySQL connection (GET_LOCK would have died with it) changes nothing.
    db.close()
    assert one.renew() and one.generation == generation
    assert not other.renew()
    # Unrenewed, it lapses and the other side takes it with a new generation.
    time.sleep(2.2)
    assert not one.held()
    assert other.renew() and other.generation == generation + 1
    assert not one.renew()
    other.release()
    assert one.renew()
