"""A consumer process for the kill -9 test: journals every job it starts and finishes.

    JOURNAL=<file> SLOW_SECONDS=<s> MAX_JOBS=<n> python -m tests.reliability.slow_consumer

It runs the platform's one consumer loop (shared.jobqueue.Consumer) on contact-events, batching like
the real contact-events worker, with a handler that only writes to the journal.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.jobqueue import Consumer, ConsumerOptions, Delivery, get_queue
from shared.jobs import ContactEventsJob


def main() -> None:
    journal = Path(os.environ["JOURNAL"])
    slow = float(os.environ.get("SLOW_SECONDS", "0"))

    def note(line: str) -> None:
        # O_APPEND + one write per line: lines from two processes never interleave.
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def handle(batch: list[Delivery[ContactEventsJob]]) -> None:
        for d in batch:
            note(f"start {d.job.events[0].contact_id} pid={os.getpid()}")
        time.sleep(slow)
        for d in batch:
            note(f"done {d.job.events[0].contact_id} pid={os.getpid()}")

    consumer = Consumer(
        get_queue(),
        ContactEventsJob,
        handle,
        options=ConsumerOptions(batch_size=5, linger_seconds=0.2, reserve_timeout=1),
    )
    consumer.install_signal_handlers()
    consumer.run(max_jobs=int(os.environ.get("MAX_JOBS", "0")) or None, idle_exit_seconds=30)


if __name__ == "__main__":
    main()
