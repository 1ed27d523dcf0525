"""Prometheus metrics of the consumers and the scheduler (docs/metrics.md), on METRICS_PORT.

Each consumer and the scheduler is one process, so prometheus_client's default registry and its
own HTTP server fit; the HTTP functions (gunicorn, several workers) are not instrumented yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.jobqueue import Delivery, PoisonJob, Queue, QueueUnavailable, RetryJob
from shared.jobs import JOB_TYPES

log = logging.getLogger(__name__)

JOBS = Counter(
    "amosync_jobs",
    "Jobs a consumer's handler finished, by outcome: done, retried (released with a delay), "
    "rejected (poison: buried with its reason), failed (an unexpected error; retried a few times)",
    ["tube", "outcome"],
)
JOBS_BURIED = Counter(
    "amosync_jobs_buried",
    "Jobs buried for an operator (malformed, poison, out of retries): `amosync queue buried`",
    ["tube"],
)
BATCH_SECONDS = Histogram(
    "amosync_job_batch_seconds",
    "Time a consumer's handler spent on one reserved batch",
    ["tube"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
SCHEDULER_RUNS = Counter(
    "amosync_scheduler_runs",
    "Scheduled runs by job and result: done, skipped (slot already claimed), failed",
    ["job", "result"],
)
SCHEDULER_LEASE_HELD = Gauge(
    "amosync_scheduler_lease_held", "1 while this scheduler holds the lease and schedules"
)


class TubeDepthCollector(Collector):
    """Each tube's jobs by state, read from beanstalkd at scrape time."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "amosync_tube_jobs", "Jobs in a beanstalkd tube, by state", labels=["tube", "state"]
        )
        for tube in sorted(JOB_TYPES):
            try:
                stats = self.queue.tube_stats(tube)
            except QueueUnavailable:
                continue  # no sample rather than a wrong zero; alert on absence
            for state in ("ready", "reserved", "delayed", "buried"):
                family.add_metric([tube, state], float(stats.get(f"current-jobs-{state}", 0)))
        yield family


_serving: set[int] = set()


def serve_metrics(port: int, *, queue: Queue | None = None) -> bool:
    """Serve /metrics on `port` (0: off) in a daemon thread; a busy port is logged, not fatal."""
    if port == 0 or port in _serving:
        return port != 0
    try:
        start_http_server(port)
    except OSError as exc:
        log.warning("metrics port unavailable", extra={"port": port, "error": str(exc)})
        return False
    # One process serves one consumer type: the first queue is the one to report.
    if queue is not None and not _serving:
        REGISTRY.register(TubeDepthCollector(queue))
    _serving.add(port)
    return True


def observed_handler(
    tube: str, handler: Callable[[list[Any]], None]
) -> Callable[[list[Any]], None]:
    """The handler, counting each delivery's outcome and timing the batch."""

    def handle(batch: list[Any]) -> None:
        started = time.perf_counter()
        try:
            handler(batch)
        except PoisonJob:
            _count(tube, batch, default="rejected")
            raise
        except RetryJob:
            _count(tube, batch, default="retried")
            raise
        except Exception:
            _count(tube, batch, default="failed")
            raise
        else:
            _count(tube, batch, default="done")
        finally:
            BATCH_SECONDS.labels(tube).observe(time.perf_counter() - started)

    return handle


_OUTCOMES = {"retry": "retried", "bury": "rejected"}


def _count(tube: str, batch: Sequence[Delivery[Any]], *, default: str) -> None:
    for delivery in batch:
        outcome = _OUTCOMES.get(delivery.outcome or "", default)
        JOBS.labels(tube, outcome).inc()


def count_buried(tube: str) -> None:
    JOBS_BURIED.labels(tube).inc()
