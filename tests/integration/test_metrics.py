"""A consumer's /metrics: jobs by outcome, buried jobs, batch time and tube depth move for real."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY

from shared.jobqueue import get_queue
from shared.jobs import RefreshTokenJob
from shared.workers import WorkerRegistry, build_consumer

pytestmark = pytest.mark.integration

TUBE = RefreshTokenJob.tube


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_consumer_metrics_count_outcomes_and_depth(
    db: Any, beanstalkd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("METRICS_PORT", str(port))
    queue = get_queue()
    # One job for an account that does not exist (done: nothing to refresh) and one malformed.
    queue.put(RefreshTokenJob(account_id=987_654_321))
    with queue.connect(use=TUBE) as client:
        client.put('{"account_id": "not a number"}')
    done = sample("amosync_jobs_total", tube=TUBE, outcome="done")
    buried = sample("amosync_jobs_buried_total", tube=TUBE)
    batches = sample("amosync_job_batch_seconds_count", tube=TUBE)

    name = f"metrics-{uuid.uuid4().hex[:8]}"
    consumer = build_consumer(TUBE, name=name)
    try:
        consumer.run(idle_exit_seconds=1.5)
    finally:
        # Leave no registry row behind: other tests count this type's workers.
        WorkerRegistry(db).delete(TUBE, name)

    assert sample("amosync_jobs_total", tube=TUBE, outcome="done") == done + 1
    assert sample("amosync_jobs_buried_total", tube=TUBE) == buried + 1
    assert sample("amosync_job_batch_seconds_count", tube=TUBE) == batches + 1
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert f'amosync_jobs_total{{outcome="done",tube="{TUBE}"}}' in text
    # Tube depth read from beanstalkd at scrape time: the malformed job waits, buried.
    assert f'amosync_tube_jobs{{state="buried",tube="{TUBE}"}} 1.0' in text
    assert f'amosync_tube_jobs{{state="ready",tube="{TUBE}"}} 0.0' in text
