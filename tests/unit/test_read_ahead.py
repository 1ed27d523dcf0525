"""prefetch.read_ahead: a full run's amoCRM pages read by a thread of their own, bounded."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from shared.logs import request_id_var
from shared.prefetch import read_ahead

pytestmark = pytest.mark.unit


class Source:
    """An iterator that records how far it was read, from which thread, and whether closed."""

    def __init__(self, items: int, *, fail_at: int | None = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.read = 0
        self.threads: set[str] = set()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[int]:
        return self.pages()

    def pages(self) -> Iterator[int]:
        try:
            for n in range(self.items):
                self.threads.add(threading.current_thread().name)
                if n == self.fail_at:
                    raise RuntimeError(f"page {n} failed")
                self.read = n + 1
                yield n
        finally:
            self.closed.set()


def settle() -> None:
    time.sleep(0.2)


def test_items_arrive_in_order_from_another_thread() -> None:
    source = Source(50)
    exits: list[str] = []
    items = list(
        read_ahead(iter(source), on_exit=lambda: exits.append(threading.current_thread().name))
    )
    assert items == list(range(50))
    assert source.threads == {"read-ahead"} and exits == ["read-ahead"]
    assert source.closed.is_set()


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_the_reader_stays_at_most_ahead_items_ahead(ahead: int) -> None:
    source = Source(100)
    pages = read_ahead(iter(source), ahead=ahead)
    with contextlib.closing(pages):
        for n in range(5):
            assert next(pages) == n
            settle()
            # Item n is with the caller: the reader may have produced up to `ahead` more.
            assert source.read <= n + 1 + ahead
    assert source.closed.wait(5)


def test_a_source_error_is_raised_in_the_caller_after_the_items_before_it() -> None:
    source = Source(10, fail_at=4)
    got: list[int] = []
    with pytest.raises(RuntimeError, match="page 4 failed"):
        for item in read_ahead(iter(source)):
            got.append(item)
    assert got == [0, 1, 2, 3]


def test_closing_stops_the_reader_and_closes_the_source_in_its_thread() -> None:
    source = Source(1000)
    exited = threading.Event()
    pages = read_ahead(iter(source), on_exit=exited.set)
    with pytest.raises(KeyError), contextlib.closing(pages):
        for item in pages:
            if item == 3:
                raise KeyError("the caller's own failure")
    # closing() waited for the reader: it is gone and stopped early.
    assert exited.is_set() and source.closed.is_set()
    assert source.read < 10
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


def test_a_slow_item_calls_on_wait_in_the_callers_thread() -> None:
    def slow() -> Iterator[int]:
        time.sleep(0.5)
        yield 1

    waits: list[str] = []
    items = list(
        read_ahead(
            slow(),
            on_wait=lambda: waits.append(threading.current_thread().name),
            wait_seconds=0.1,
        )
    )
    assert items == [1]
    assert len(waits) >= 2 and set(waits) == {threading.current_thread().name}


def test_the_reader_keeps_the_callers_request_id() -> None:
    seen: list[str | None] = []

    def source() -> Iterator[int]:
        seen.append(request_id_var.get())
        yield 1

    token = request_id_var.set("req-42")
    try:
        assert list(read_ahead(source())) == [1]
    finally:
        request_id_var.reset(token)
    assert seen == ["req-42"]


def test_ahead_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ahead"):
        next(read_ahead(iter([1]), ahead=0))
