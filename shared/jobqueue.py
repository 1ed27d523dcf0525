"""Beanstalk: putting typed jobs on their tubes and the one consumer loop every worker runs."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

import greenstalk
from pydantic import ValidationError

from shared.backoff import jittered_backoff
from shared.jobs import Job
from shared.logs import request_id_var
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

JobT = TypeVar("JobT", bound=Job)

# Our job bodies are JSON text, so every greenstalk client and job here carries `str`.
Client = greenstalk.Client[str]
RawJob = greenstalk.Job[str]

DEFAULT_PRIORITY = 1024


class QueueUnavailable(Exception):
    """beanstalkd cannot be reached; HTTP handlers answer 503 so the sender retries."""


class RetryJob(Exception):
    """A transient failure: put the job back with a delay (backoff unless one is given).

    `deferred`: nothing is wrong with the job, the vendor asked everyone behind our egress to
    wait (a 429, a 403 block); the wait does not spend the job's retry budget.
    """

    def __init__(self, reason: str, *, delay: float | None = None, deferred: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.deferred = deferred


class PoisonJob(Exception):
    """The job can never succeed as it is: bury it with the reason for an operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Queue:
    """A beanstalkd connection per thread (greenstalk clients are not thread-safe)."""

    def __init__(self, host: str, port: int, *, tube_prefix: str = "") -> None:
        self.host = host
        self.port = port
        self.tube_prefix = tube_prefix
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> Queue:
        return cls(
            settings.beanstalk_host,
            settings.beanstalk_port,
            tube_prefix=settings.beanstalk_tube_prefix,
        )

    def tube_name(self, tube: str) -> str:
        return f"{self.tube_prefix}{tube}"

    def connect(self, *, use: str | None = None, watch: str | None = None) -> Client:
        """A new client of our own (consumers keep theirs for their lifetime)."""
        try:
            return greenstalk.Client(
                (self.host, self.port),
                use=self.tube_name(use) if use else "default",
                watch=self.tube_name(watch) if watch else "default",
            )
        except OSError as exc:
            raise QueueUnavailable(f"beanstalkd unreachable at {self.host}:{self.port}") from exc

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self.connect()
            self._local.client = client
            self._local.using = "default"
        return client

    def _drop(self) -> None:
        client: Client | None = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def _with_client(self, op: Callable[[Client], Any]) -> Any:
        # One reconnect covers a beanstalkd restart between two requests of a long-lived worker.
        for attempt in (1, 2):
            try:
                return op(self._client())
            except (OSError, greenstalk.UnknownResponseError) as exc:
                self._drop()
                if attempt == 2:
                    raise QueueUnavailable(f"beanstalkd unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def put(
        self,
        job: Job,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int | None = None,
    ) -> int:
        """Durably queue a job (acknowledged after beanstalkd wrote its binlog); returns its id."""
        if job.request_id is None:
            job = job.model_copy(update={"request_id": request_id_var.get()})
        body = job.model_dump_json()
        tube = self.tube_name(job.tube)
        ttr = ttr or get_settings().job_ttr_seconds

        def _put(client: Client) -> int:
            if self._local.using != tube:
                client.use(tube)
                self._local.using = tube
            job_id: int = client.put(body, priority=priority, delay=delay, ttr=ttr)
            return job_id

        job_id: int = self._with_client(_put)
        return job_id

    def tube_stats(self, tube: str) -> dict[str, Any]:
        """beanstalkd's stats-tube for one of our tubes (zeros if it does not exist yet)."""
        name = self.tube_name(tube)

        def _stats(client: Client) -> dict[str, Any]:
            try:
                return dict(client.stats_tube(name))
            except greenstalk.NotFoundError:
                return {
                    "name": name,
                    "current-jobs-ready": 0,
                    "current-jobs-buried": 0,
                    "current-jobs-reserved": 0,
                    "current-jobs-delayed": 0,
                    "current-watching": 0,
                    "total-jobs": 0,
                }

        result: dict[str, Any] = self._with_client(_stats)
        return result

    def peek_buried(self, tube: str) -> RawJob | None:
        name = self.tube_name(tube)

        def _peek(client: Client) -> RawJob | None:
            if self._local.using != name:
                client.use(name)
                self._local.using = name
            try:
                return client.peek_buried()
            except greenstalk.NotFoundError:
                return None

        result: RawJob | None = self._with_client(_peek)
        return result

    def kick(self, tube: str, bound: int = 1000) -> int:
        """Move up to `bound` buried jobs of a tube back to ready; returns how many moved."""
        name = self.tube_name(tube)

        def _kick(client: Client) -> int:
            if self._local.using != name:
                client.use(name)
                self._local.using = name
            kicked: int = client.kick(bound)
            return kicked

        result: int = self._with_client(_kick)
        return result

    def ping(self) -> None:
        self._with_client(lambda client: client.stats())


@lru_cache(maxsize=1)
def get_queue() -> Queue:
    return Queue.from_settings(get_settings())


@dataclass(frozen=True)
class RetryBudget:
    """How long and how often a failed job is retried: the one budget, read by the consumer
    loop and by handlers that must know when the queue gives up (a sync run marked failed).

    A known-transient failure is retried while the job's age plus the next delay stays within
    `seconds`; an unexpected exception only `max_attempts` times, so a bug does not spin for hours.
    """

    max_attempts: int = 8
    seconds: float = 6 * 3600
    backoff_base: float = 2.0
    backoff_max: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetryBudget:
        s = settings or get_settings()
        return cls(
            max_attempts=s.job_max_attempts,
            seconds=s.job_retry_budget_seconds,
            backoff_base=s.job_backoff_base_seconds,
            backoff_max=s.job_backoff_max_seconds,
        )

    def delay(self, attempts: int, asked: float | None = None) -> int:
        """Seconds before the next try: what the failure asked for, else capped backoff."""
        if asked is not None:
            return int(asked)
        return backoff_seconds(attempts, base=self.backoff_base, cap=self.backoff_max)

    def allows(
        self, *, attempts: int, age: float, delay: float, transient: bool, deferred: bool = False
    ) -> bool:
        """True while the queue still retries a job that failed this way."""
        if deferred:
            return True  # waiting out a vendor's pause or block is not a failure of the job
        if transient:
            return age + delay <= self.seconds
        return attempts < self.max_attempts


@dataclass
class Delivery(Generic[JobT]):
    """One reserved job handed to a handler; the handler may decide its fate per job."""

    job_id: int
    job: JobT
    attempts: int
    age: int = 0  # seconds since the job was first put
    # The consumer hands its budget to each delivery, so a handler and the loop agree on it.
    budget: RetryBudget = field(default_factory=RetryBudget.from_settings, repr=False)
    raw: RawJob | None = field(default=None, repr=False)
    outcome: str | None = None  # None → delete on success; "retry" or "bury" when decided
    reason: str = ""
    delay: float | None = None
    # A known-transient failure (vendor or infrastructure down) is retried for a time budget;
    # an unexpected exception only for a number of attempts (see RetryBudget).
    transient: bool = True
    deferred: bool = False  # see RetryJob
    _client: Client | None = field(default=None, repr=False)

    def retry(
        self,
        reason: str,
        *,
        delay: float | None = None,
        transient: bool = True,
        deferred: bool = False,
    ) -> None:
        self.outcome, self.reason, self.delay = "retry", reason, delay
        self.transient, self.deferred = transient, deferred

    def bury(self, reason: str) -> None:
        self.outcome, self.reason = "bury", reason

    def retry_delay(self) -> int:
        """The delay this delivery is released with: the one asked for, else the backoff."""
        return self.budget.delay(self.attempts, self.delay)

    def may_retry(self) -> bool:
        """Whether the queue will release (not bury) this delivery after its retry."""
        return self.budget.allows(
            attempts=self.attempts,
            age=self.age,
            delay=self.retry_delay(),
            transient=self.transient,
            deferred=self.deferred,
        )

    def touch(self) -> None:
        """Ask for more time to run (the job's TTR restarts)."""
        if self._client is not None:
            self._client.touch(self._raw())

    def _raw(self) -> RawJob:
        # greenstalk's release/bury/touch want a Job object, not an id.
        return self.raw if self.raw is not None else greenstalk.Job(self.job_id, "")


BatchHandler = Callable[[list[Delivery[JobT]]], None]


def backoff_seconds(attempts: int, *, base: float, cap: float) -> int:
    """Capped exponential backoff with jitter for this attempt (1-based), in whole seconds."""
    return max(1, int(jittered_backoff(attempts, base=base, cap=cap)))


@dataclass
class ConsumerOptions:
    budget: RetryBudget = field(default_factory=RetryBudget)
    batch_size: int = 1
    linger_seconds: float = 0.0
    reserve_timeout: int = 1
    heartbeat_seconds: float = 10.0


class Consumer(Generic[JobT]):
    """reserve → validate → handle → delete; release with backoff when transient; bury poison."""

    def __init__(
        self,
        queue: Queue,
        job_type: type[JobT],
        handler: BatchHandler[JobT],
        *,
        options: ConsumerOptions | None = None,
        heartbeat: Callable[[int], bool] | None = None,
        on_bury: Callable[[str, int, str, str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.job_type = job_type
        self.handler = handler
        self.options = options or ConsumerOptions()
        self.heartbeat = heartbeat
        # Called with (tube, job id, reason, body) so the reason is kept where operators look.
        self.on_bury = on_bury
        self.jobs_done = 0
        self._stop = threading.Event()
        self._client: Client | None = None

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the job in hand, then exit (a kill -9 loses nothing either)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, *, max_jobs: int | None = None, idle_exit_seconds: float | None = None) -> int:
        """Consume until stopped, `max_jobs` handled or idle that long; returns jobs handled."""
        last_beat = 0.0
        idle_since = time.monotonic()
        while not self._stop.is_set():
            if self.heartbeat and time.monotonic() - last_beat >= self.options.heartbeat_seconds:
                self._beat()
                last_beat = time.monotonic()
            batch = self._reserve_batch()
            if not batch:
                if (
                    idle_exit_seconds is not None
                    and time.monotonic() - idle_since > idle_exit_seconds
                ):
                    break
                continue
            idle_since = time.monotonic()
            self._process(batch)
            if max_jobs is not None and self.jobs_done >= max_jobs:
                break
        if self.heartbeat:
            self._beat()
        self._close()
        return self.jobs_done

    def _beat(self) -> None:
        try:
            assert self.heartbeat is not None
            if not self.heartbeat(self.jobs_done):
                # The original's delete-worker: removing a worker from the registry stops it.
                log.warning("worker removed from the registry; stopping")
                self.stop()
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)

    def _connection(self) -> Client:
        if self._client is None:
            self._client = self.queue.connect(watch=self.job_type.tube)
        return self._client

    def _close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(OSError):
                self._client.close()
            self._client = None

    def _reserve_batch(self) -> list[Delivery[JobT]]:
        try:
            client = self._connection()
            first = self._reserve_one(client, self.options.reserve_timeout)
            if first is None:
                return []
            batch = [first]
            deadline = time.monotonic() + self.options.linger_seconds
            while len(batch) < self.options.batch_size:
                remaining = deadline - time.monotonic()
                nxt = self._reserve_one(
                    client, max(0, int(remaining + 0.999)) if remaining > 0 else 0
                )
                if nxt is None:
                    break
                batch.append(nxt)
            return [d for d in batch if d.outcome is None]
        except (OSError, QueueUnavailable, greenstalk.UnknownResponseError) as exc:
            log.warning("beanstalkd unavailable, retrying", extra={"error": str(exc)})
            self._close()
            self._stop.wait(1.0)
            return []

    def _reserve_one(self, client: Client, timeout: int) -> Delivery[JobT] | None:
        try:
            raw = client.reserve(timeout=timeout)
        except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
            return None
        stats = client.stats_job(raw)
        attempts = int(stats.get("releases", 0)) + 1
        age = int(stats.get("age", 0))
        try:
            job = self.job_type.model_validate_json(raw.body)
        except ValidationError as exc:
            reason = f"invalid {self.job_type.__name__}: {exc.errors(include_input=False)}"
            log.error("burying malformed job", extra={"job_id": raw.id, "reason": reason[:500]})
            client.bury(raw)
            self._record_bury(raw.id, reason, raw.body)
            return None
        return Delivery(
            job_id=raw.id,
            job=job,
            attempts=attempts,
            age=age,
            raw=raw,
            budget=self.options.budget,
            _client=client,
        )

    def _record_bury(self, job_id: int, reason: str, body: str) -> None:
        if self.on_bury is None:
            return
        try:
            self.on_bury(self.job_type.tube, job_id, reason, body)
        except Exception:
            log.warning("could not record buried job", extra={"job_id": job_id}, exc_info=True)

    def _process(self, batch: list[Delivery[JobT]]) -> None:
        client = self._connection()
        token = request_id_var.set(batch[0].job.request_id)
        try:
            self.handler(batch)
        except PoisonJob as exc:
            for d in batch:
                if d.outcome is None:
                    d.bury(exc.reason)
        except RetryJob as exc:
            for d in batch:
                if d.outcome is None:
                    d.retry(exc.reason, delay=exc.delay, deferred=exc.deferred)
        except Exception as exc:
            log.exception("job handler failed", extra={"tube": self.job_type.tube})
            for d in batch:
                if d.outcome is None:
                    d.retry(f"{type(exc).__name__}: {exc}", transient=False)
        finally:
            request_id_var.reset(token)
        for d in batch:
            self._settle(client, d)

    def _may_retry(self, d: Delivery[JobT]) -> bool:
        return d.may_retry()

    def _settle(self, client: Client, d: Delivery[JobT]) -> None:
        request_id_var.set(d.job.request_id)
        extra = {"job_id": d.job_id, "tube": self.job_type.tube, "attempts": d.attempts}
        try:
            if d.outcome is None:
                client.delete(d.job_id)
                self.jobs_done += 1
                log.info("job done", extra=extra)
            elif d.outcome == "retry" and self._may_retry(d):
                delay = d.retry_delay()
                client.release(d._raw(), priority=DEFAULT_PRIORITY, delay=delay)
                log.warning(
                    "job released for retry",
                    extra={**extra, "delay": delay, "reason": d.reason[:500]},
                )
            else:
                reason = (
                    d.reason
                    if d.outcome == "bury"
                    else f"gave up after {d.attempts} attempts in {d.age} s: {d.reason}"
                )
                client.bury(d._raw())
                log.error("job buried", extra={**extra, "reason": reason[:1000]})
                self._record_bury(d.job_id, reason, d.job.model_dump_json())
        except greenstalk.NotFoundError:
            # TTR ran out and another worker took the job; it will be handled there.
            log.warning("job vanished before it was settled", extra=extra)
        except (OSError, greenstalk.UnknownResponseError) as exc:
            # beanstalkd went away mid-batch: the reservation lapses and the job is delivered
            # again (handlers are idempotent); the worker must survive and reconnect.
            log.warning("could not settle job", extra={**extra, "error": str(exc)})
            self._close()
        finally:
            request_id_var.set(None)


def hostname() -> str:
    return socket.gethostname()
