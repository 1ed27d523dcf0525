"""Request throttles: the `Throttle` protocol and an in-process implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Budget:
    """One request budget: a key in `amo_rate_slots` and the requests per second it allows."""

    key: str
    rate: float

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate of budget {self.key!r} must be positive")


class MySqlThrottle:
    """Cross-process throttle: rows in `amo_rate_slots` hand out request slots, one row per budget.

    A request usually has to fit several budgets at once: its account's (amoCRM: 7/s) and its
    egress IP's across all accounts (amoCRM bans an IP, not only an account); bulk work also the
    bulk lane's share of the IP. One short transaction locks every budget's row (`SELECT … FOR
    UPDATE`, in key order), takes the first instant all of them allow and moves each of them on
    by its own interval, so no budget is ever exceeded on the wire whatever the mix of callers.
    Slots are handed out first come, first served, so a big account's sync and a small
    account's webhook interleave instead of queueing behind each other. Time comes from the
    MySQL server's clock so processes on different hosts agree without synced clocks.
    """

    def __init__(
        self,
        db: Database,
        budgets: str | Sequence[Budget],
        rate: float = 7.0,
        *,
        safety: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`budgets` is a list of Budget, or a single key that `rate` applies to."""
        if isinstance(budgets, str):
            budgets = [Budget(budgets, rate)]
        if not budgets:
            raise ValueError("a throttle needs at least one budget")
        self.db = db
        # Key order is the lock order: two throttles sharing rows never lock them crosswise.
        self.budgets = sorted(budgets, key=lambda budget: budget.key)
        self._intervals = {b.key: (1.0 + safety) / b.rate for b in self.budgets}
        self._sleep = sleep
        self._rows_created = False

    @property
    def keys(self) -> list[str]:
        return [budget.key for budget in self.budgets]

    def acquire(self) -> None:
        now, slot = self.reserve()
        if slot > now:
            self._sleep(slot - now)

    def reserve(self) -> tuple[float, float]:
        """Take the next slot without waiting for it: (server now, slot), epoch seconds.

        `acquire` is reserve-then-sleep; the slot is what the budgets promise, the moment the
        request actually leaves is that plus however late the process wakes.
        """
        # The rows are created outside the slot transaction: concurrent INSERT IGNOREs of one new
        # key inside `SELECT … FOR UPDATE` transactions take gap and insert-intention locks that
        # InnoDB resolves by killing one of them (1213). The reservation itself is still retried
        # on a deadlock or lock-wait timeout, because the slot update is pure database work.
        # Rows of this table are never deleted, so each throttle creates them once, not on
        # every request.
        if not self._rows_created:
            for key in self.keys:
                self.db.execute(
                    "INSERT IGNORE INTO amo_rate_slots (account_key, next_slot) VALUES (%s, 0)",
                    (key,),
                )
            self._rows_created = True
        return self.db.run_transaction(self._reserve_slot)

    def _reserve_slot(self, cur: DictCursor) -> tuple[float, float]:
        """Take the first slot every budget allows; returns (server now, slot) in epoch seconds."""
        now = 0.0
        slot = 0.0
        for key in self.keys:  # in key order: the lock order
            cur.execute(
                "SELECT next_slot, UNIX_TIMESTAMP(NOW(6)) AS now FROM amo_rate_slots "
                "WHERE account_key = %s FOR UPDATE",
                (key,),
            )
            row = cur.fetchone()
            assert row is not None  # inserted by acquire(); rows of this table are never deleted
            now = max(now, float(row["now"]))
            slot = max(slot, float(row["next_slot"]))
        slot = max(now, slot)
        cur.executemany(
            "UPDATE amo_rate_slots SET next_slot = %s WHERE account_key = %s",
            [(slot + self._intervals[key], key) for key in self.keys],
        )
        return now, slot

    def pause(self, seconds: float) -> None:
        """Hold back every budget of this throttle (a 429 slows the IP, not only the account)."""
        delay = max(0.0, seconds)
        for key in self.keys:
            self.db.execute(
                "INSERT INTO amo_rate_slots (account_key, next_slot) "
                "VALUES (%s, UNIX_TIMESTAMP(NOW(6)) + %s) ON DUPLICATE KEY UPDATE "
                "next_slot = GREATEST(next_slot, UNIX_TIMESTAMP(NOW(6)) + %s)",
                (key, delay, delay),
            )
