"""Request throttles: the `Throttle` protocol and an in-process implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pymysql.cursors import DictCursor

    from shared.db import Database


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


class MySqlThrottle:
    """Cross-process throttle: one row per account in `amo_rate_slots` hands out request slots.

    Every process (function containers, each consumer) reserves its slot in a short transaction
    on the row (`SELECT … FOR UPDATE` serializes them), then sleeps until the slot. Time comes
    from the MySQL server's clock so processes on different hosts agree without synced clocks.
    """

    def __init__(
        self,
        db: Database,
        key: str,
        rate: float = 7.0,
        *,
        safety: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.db = db
        self.key = key
        self._interval = (1.0 + safety) / rate
        self._sleep = sleep

    def acquire(self) -> None:
        # The row is created outside the slot transaction: concurrent INSERT IGNOREs of one new
        # key inside `SELECT … FOR UPDATE` transactions take gap and insert-intention locks that
        # InnoDB resolves by killing one of them (1213). The reservation itself is still retried
        # on a deadlock or lock-wait timeout, because the slot update is pure database work.
        self.db.execute(
            "INSERT IGNORE INTO amo_rate_slots (account_key, next_slot) VALUES (%s, 0)",
            (self.key,),
        )
        now, slot = self.db.run_transaction(self._reserve_slot)
        if slot > now:
            self._sleep(slot - now)

    def _reserve_slot(self, cur: DictCursor) -> tuple[float, float]:
        """Take the next free slot of this key; returns (server now, slot) in epoch seconds."""
        cur.execute(
            "SELECT next_slot, UNIX_TIMESTAMP(NOW(6)) AS now FROM amo_rate_slots "
            "WHERE account_key = %s FOR UPDATE",
            (self.key,),
        )
        row = cur.fetchone()
        assert row is not None  # inserted by acquire(); rows of this table are never deleted
        now = float(row["now"])
        slot = max(now, float(row["next_slot"]))
        cur.execute(
            "UPDATE amo_rate_slots SET next_slot = %s WHERE account_key = %s",
            (slot + self._interval, self.key),
        )
        return now, slot

    def pause(self, seconds: float) -> None:
        self.db.execute(
            "INSERT INTO amo_rate_slots (account_key, next_slot) "
            "VALUES (%s, UNIX_TIMESTAMP(NOW(6)) + %s) "
            "ON DUPLICATE KEY UPDATE next_slot = GREATEST(next_slot, UNIX_TIMESTAMP(NOW(6)) + %s)",
            (self.key, max(0.0, seconds), max(0.0, seconds)),
        )
