"""Request throttles: the `Throttle` protocol and an in-process implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Throttle(Protocol):
    """Gate every outgoing request of one account through `acquire`; `pause` on a 429."""

    def acquire(self) -> None:
        """Block until one more request may be sent."""

    def pause(self, seconds: float) -> None:
        """Hold back every caller of this throttle for `seconds` (the vendor said slow down)."""


class IntervalThrottle:
    """Thread-safe in-process throttle that spaces requests evenly at `rate` per second.

    Even spacing rather than "N per window" bursts: amoCRM counts requests in a sliding 1 s
    window on its side, after network jitter; bursts of 7 sent back to back can land as 8 in one
    of its windows. `safety` stretches the interval a little for the same reason. Only covers
    the threads of this process; the cross-process limiter lives beside it in this module.
    """

    def __init__(
        self,
        rate: float = 7.0,
        *,
        safety: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = (1.0 + safety) / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._paused_until = 0.0

    def acquire(self) -> None:
        """Reserve the next free slot and sleep until it comes; re-reserve if paused meanwhile."""
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._next_at, self._paused_until)
                self._next_at = slot + self._interval
            if slot > now:
                self._sleep(slot - now)
            with self._lock:
                # A pause that arrived while we slept (another thread got a 429) wins over our slot.
                if self._paused_until <= self._clock():
                    return

    def pause(self, seconds: float) -> None:
        """Delay every caller's next request by at least `seconds` from now."""
        with self._lock:
            until = self._clock() + max(0.0, seconds)
            self._paused_until = max(self._paused_until, until)
            self._next_at = max(self._next_at, until)
