"""The queue under faults: beanstalkd restarts keep jobs (binlog); a killed consumer loses none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import greenstalk
import pytest

from devstack.stack import ROOT
from shared.jobqueue import get_queue
from shared.jobs import ContactEvent, ContactEventsJob
from testing.widget import wait_for
from tests.conftest import Beanstalkd

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def _job(contact_id: int) -> ContactEventsJob:
    return ContactEventsJob(
        account_id=1,
        events=[ContactEvent(action="update", contact_id=contact_id, name=f"c{contact_id}")],
    )


def _drain(tube: str) -> list[ContactEventsJob]:
    queue = get_queue()
    client = queue.connect(watch=tube, use=tube)
    jobs = []
    try:
        while True:
            try:
                raw = client.reserve(timeout=0)
            except greenstalk.TimedOutError:
                return jobs
            jobs.append(ContactEventsJob.model_validate_json(raw.body))
            client.delete(raw)
    finally:
        client.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill-9"])
def test_queued_jobs_survive_a_beanstalkd_restart(beanstalkd: Beanstalkd, sig: int) -> None:
    queue = get_queue()
    ready = [queue.put(_job(i)) for i in range(1, 41)]
    queue.put(_job(1000), delay=1)
    buried_job = queue.put(_job(2000))
    client = queue.connect(watch=ContactEventsJob.tube)
    try:
        # Reserve everything before the buried one, bury it, put the rest back untouched.
        reserved = []
        while True:
            raw = client.reserve(timeout=1)
            if raw.id == buried_job:
                client.bury(raw)
                break
            reserved.append(raw)
        for raw in reserved:
            client.release(raw)
    finally:
        client.close()

    try:
        beanstalkd.stop(sig)
        beanstalkd.start()
        stats = queue.tube_stats(ContactEventsJob.tube)
        assert stats["current-jobs-buried"] == 1
        assert stats["current-jobs-ready"] + stats["current-jobs-delayed"] == len(ready) + 1
        assert queue.kick(ContactEventsJob.tube) == 1
        got = wait_for(
            lambda: _drain_until(ContactEventsJob.tube, expected=len(ready) + 2),
            timeout=10,
            what="every job back after the restart",
        )
        ids = sorted(j.events[0].contact_id for j in got)
        assert ids == [*range(1, 41), 1000, 2000]
    finally:
        if beanstalkd.proc is None or beanstalkd.proc.poll() is not None:
            beanstalkd.start()


_collected: dict[str, list[ContactEventsJob]] = {}


def _drain_until(tube: str, *, expected: int) -> list[ContactEventsJob] | None:
    # Delayed jobs become ready after their delay: keep what was drained across polls.
    bucket = _collected.setdefault(get_queue().tube_name(tube), [])
    bucket.extend(_drain(tube))
    return list(bucket) if len(bucket) >= expected else None


def _consumer(journal: Path, *, slow: float, max_jobs: int = 0) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOURNAL": str(journal),
        "SLOW_SECONDS": str(slow),
        "MAX_JOBS": str(max_jobs),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.slow_consumer"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_consumer_killed_mid_batch_loses_nothing_and_each_job_finishes_once(
    beanstalkd: Beanstalkd, tmp_path: Path
) -> None:
    queue = get_queue()
    # A short TTR: were beanstalkd not to notice the dead connection, the jobs still come back.
    for i in range(1, 13):
        queue.put(_job(i), ttr=5)
    journal = tmp_path / "journal"
    victim = _consumer(journal, slow=120)
    try:
        started = wait_for(
            lambda: [ln for ln in _journal(journal) if ln.startswith("start")],
            timeout=20,
            what="the first consumer to start a batch",
        )
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    in_flight = {int(ln.split()[1]) for ln in started}
    assert in_flight, "the victim had a batch in hand"
    assert not [ln for ln in _journal(journal) if ln.startswith("done")]

    survivor = _consumer(journal, slow=0, max_jobs=12)
    try:
        assert survivor.wait(60) == 0, survivor.stderr.read() if survivor.stderr else ""
    finally:
        if survivor.poll() is None:
            survivor.kill()
    done = Counter(int(ln.split()[1]) for ln in _journal(journal) if ln.startswith("done"))
    assert done == Counter(range(1, 13)), "every job done, and done exactly once"
    stats = queue.tube_stats(ContactEventsJob.tube)
    assert stats["current-jobs-ready"] == stats["current-jobs-reserved"] == 0
    assert stats["current-jobs-buried"] == 0
