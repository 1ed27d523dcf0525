"""The scheduler's once-per-slot claim and its token-refresh run, with two replicas."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from scheduler.main import refresh_tokens_job, run_once
from shared.db import Database
from shared.jobqueue import get_queue
from shared.settings import get_settings
from testing.caches import reset_caches

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_two_calls_in_one_slot_run_once(db: Database) -> None:
    calls: list[int] = []
    name = f"test-{uuid.uuid4().hex[:8]}"
    assert run_once(name, 3600, lambda: calls.append(1) or 1) == 1
    assert run_once(name, 3600, lambda: calls.append(1) or 1) is None
    assert calls == [1]


def test_two_replicas_run_the_token_refresh_once(
    db: Database, beanstalkd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh interval length gives this test a slot no earlier run has claimed.
    minutes = 100_000 + int(uuid.uuid4().int % 100_000)
    monkeypatch.setenv("TOKEN_REFRESH_INTERVAL_MINUTES", str(minutes))
    monkeypatch.setenv("TOKEN_REFRESH_HORIZON_HOURS", "1")
    env = dict(os.environ)
    script = (
        "from scheduler.main import refresh_tokens_job; from shared.settings import get_settings;"
        "r = refresh_tokens_job(get_settings()); print('ran' if r is not None else 'skipped')"
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in replicas)
    assert outputs == ["ran", "skipped"]
    rows = db.fetch_all(
        "SELECT host FROM scheduler_runs WHERE job_name = 'refresh-tokens' AND run_key = %s",
        (str(int(time.time()) // (minutes * 60)),),
    )
    assert len(rows) == 1
    # And in-process, the same slot is already taken.
    reset_caches()
    assert refresh_tokens_job(get_settings()) is None
    assert get_queue().tube_stats("token-refresh")["current-jobs-buried"] == 0


def test_failed_action_releases_its_slot(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    from shared.jobqueue import QueueUnavailable

    name = f"test-{uuid.uuid4().hex[:8]}"

    def enqueue_while_beanstalkd_is_down() -> int:
        raise QueueUnavailable("beanstalkd unavailable")

    with pytest.raises(QueueUnavailable):
        run_once(name, 3600, enqueue_while_beanstalkd_is_down)
    assert db.fetch_all("SELECT * FROM scheduler_runs WHERE job_name = %s", (name,)) == []
    assert any(r.levelname == "ERROR" and getattr(r, "job", None) == name for r in caplog.records)
    # The same slot runs on the next firing (or on another replica), then it is claimed.
    assert run_once(name, 3600, lambda: 7) == 7
    assert run_once(name, 3600, lambda: 8) is None
