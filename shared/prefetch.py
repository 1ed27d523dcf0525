"""Read ahead: the items of an iterator read by a thread of its own, a bounded number ahead.

A full sync reads amoCRM pages this way: the next request goes out at its rate-limit slot
instead of after our processing and imports, and memory stays a few pages whatever the
account's size.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

# A full run reads amoCRM pages in a thread of its own, this many ahead of the page being
# applied: the next request goes out at its rate-limit slot instead of after our processing and
# imports, and memory stays a few pages whatever the account's size.
PREFETCH_PAGES = 2
# While the reader waits that long for a page (a 429 pause, retries), the job's TTR is renewed.
_PREFETCH_TOUCH_SECONDS = 10.0
# How long a stopped reader may take to finish its request in flight before we go on without it.
_PREFETCH_JOIN_SECONDS = 30.0

T = TypeVar("T")


def read_ahead(
    source: Iterator[T],
    *,
    ahead: int = PREFETCH_PAGES,
    on_wait: Callable[[], None] = lambda: None,
    on_exit: Callable[[], None] = lambda: None,
    wait_seconds: float = _PREFETCH_TOUCH_SECONDS,
) -> Generator[T, None, None]:
    """The items of `source`, read by a thread of its own at most `ahead` items ahead.

    An exception of the source is raised here, in order, after the items before it. Closing
    this iterator (use contextlib.closing: an exception in the caller's loop does not close it)
    stops the reader, closes the source in the reader's thread and waits for it. `on_wait` runs
    in the caller's thread whenever an item takes `wait_seconds`; `on_exit` in the reader's
    thread when it ends. The reader keeps the caller's context (request id in its logs).
    """
    if ahead < 1:
        raise ValueError("ahead must be >= 1")
    # The reader takes a permit before reading an item; the caller gives it back on taking one.
    permits = threading.Semaphore(ahead)
    slots: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def permitted() -> bool:
        while not stop.is_set():
            if permits.acquire(timeout=0.2):
                return True
        return False

    def read() -> None:
        try:
            items = iter(source)
            while permitted():
                try:
                    item = next(items)
                except StopIteration:
                    slots.put(("end", None))
                    return
                slots.put(("item", item))
        except BaseException as exc:  # handed over and raised in the caller's thread
            slots.put(("error", exc))
        finally:
            close = getattr(source, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                on_exit()

    reader = threading.Thread(
        target=contextvars.copy_context().run, args=(read,), name="read-ahead", daemon=True
    )
    reader.start()
    try:
        while True:
            try:
                kind, value = slots.get(timeout=wait_seconds)
            except queue.Empty:
                on_wait()
                continue
            if kind == "item":
                permits.release()
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        reader.join(_PREFETCH_JOIN_SECONDS)
        if reader.is_alive():
            log.warning("read-ahead thread still busy after its reader stopped")
