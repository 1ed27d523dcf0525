"""The 7 rps limit: IntervalThrottle in isolation and across threads against the sandbox."""

from __future__ import annotations

import itertools
import threading

import pytest

from shared.amocrm import AmoCrmClient
from shared.ratelimit import IntervalThrottle

from .conftest import Sandbox

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_interval_throttle_spaces_requests() -> None:
    clock = FakeClock()
    throttle = IntervalThrottle(rate=7, safety=0.05, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(15):
        throttle.acquire()
        stamps.append(clock.now)
    assert all(b - a == pytest.approx(0.15) for a, b in itertools.pairwise(stamps))
    assert sum(1 for t in stamps if stamps[0] <= t < stamps[0] + 1) == 7


def test_pause_holds_back_the_next_acquire() -> None:
    clock = FakeClock()
    throttle = IntervalThrottle(rate=7, clock=clock, sleep=clock.sleep)
    throttle.acquire()
    throttle.pause(5)
    throttle.acquire()
    assert clock.now == pytest.approx(105)


def run_threads(sandbox: Sandbox, throttle: IntervalThrottle, threads: int, each: int) -> None:
    # One client (and session) per thread, one throttle for the account: how workers share it.
    clients = [sandbox.client(throttle=throttle) for _ in range(threads)]

    def work(client: AmoCrmClient) -> None:
        for _ in range(each):
            client.get_account()

    workers = [threading.Thread(target=work, args=(c,)) for c in clients]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def test_shared_throttle_keeps_threads_under_7_rps(sandbox: Sandbox) -> None:
    sandbox.configure(rate_limit=7)
    run_threads(sandbox, IntervalThrottle(rate=7), threads=4, each=5)
    stats = sandbox.control("GET", "/stats")
    assert stats["by_status"] == {"200": 20}
    assert stats["max_per_second"] <= 7


def test_measurement_catches_an_unthrottled_client(sandbox: Sandbox) -> None:
    # The same measurement fails when nothing throttles: the sandbox sees > 7 in a second.
    run_threads(sandbox, IntervalThrottle(rate=1000), threads=4, each=5)
    assert sandbox.control("GET", "/stats")["max_per_second"] > 7
