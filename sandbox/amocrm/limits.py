"""amoCRM's request limits as the emulator enforces them: sliding windows, 429 strikes, IP bans.

Real amoCRM answers 429 beyond its per-second limits and, after repeated violations, 403 to every
request — Kommo says from the IP address, amoCRM says for the account (reference §5). The
emulator counts per client IP across all accounts as well as per account, and escalates repeated
429s of one IP into a ban of that IP, so a client that only throttles per account is caught here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WINDOW = 1.0  # the limits are "per second": a sliding one-second window


@dataclass
class Ban:
    ip: str
    since: float
    until: float | None  # None: until lifted through the control API
    reason: str

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "since": self.since,
            "until": self.until,
            "remaining_seconds": None if self.until is None else max(0.0, self.until - now),
            "reason": self.reason,
        }


class Limiter:
    """Windows keyed by (scope, key), 429 strikes and bans per IP, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._strikes: dict[str, deque[float]] = {}
        self._bans: dict[str, Ban] = {}

    def admit(self, budgets: Iterable[tuple[str, str, int]], now: float) -> float | None:
        """Count one request against every (scope, key, limit) budget, or none of them.

        Returns None when admitted, else the seconds until the fullest window frees a slot. A
        limit of 0 or less is off. A refused request is not counted (as before: a client that
        backs off gets through as soon as the window moves).
        """
        with self.lock:
            windows = []
            wait = 0.0
            for scope, key, limit in budgets:
                if limit <= 0:
                    continue
                window = self._windows.setdefault((scope, key), deque())
                while window and window[0] <= now - WINDOW:
                    window.popleft()
                if len(window) >= limit:
                    wait = max(wait, window[-limit] + WINDOW - now)
                windows.append(window)
            if wait > 0:
                return wait
            for window in windows:
                window.append(now)
            return None

    def strike(
        self, ip: str, now: float, *, after: int, window: float, seconds: float
    ) -> Ban | None:
        """Record a rate-limit 429 answered to `ip`; the `after`-th within `window` bans it."""
        if after <= 0:
            return None
        with self.lock:
            strikes = self._strikes.setdefault(ip, deque())
            strikes.append(now)
            while strikes and strikes[0] <= now - window:
                strikes.popleft()
            if len(strikes) < after:
                return None
            strikes.clear()
            return self._ban(ip, now, seconds, f"{after} requests over the limit in {window:g} s")

    def ban(self, ip: str, now: float, seconds: float, reason: str) -> Ban:
        with self.lock:
            return self._ban(ip, now, seconds, reason)

    def _ban(self, ip: str, now: float, seconds: float, reason: str) -> Ban:
        ban = Ban(ip=ip, since=now, until=now + seconds if seconds > 0 else None, reason=reason)
        self._bans[ip] = ban
        return ban

    def banned(self, ip: str, now: float) -> Ban | None:
        with self.lock:
            ban = self._bans.get(ip)
            if ban is not None and not ban.active(now):
                del self._bans[ip]
                return None
            return ban

    def lift(self, ip: str | None = None) -> int:
        """Lift one IP's ban (and forget its strikes), or every ban; returns how many."""
        with self.lock:
            if ip is None:
                count = len(self._bans)
                self._bans.clear()
                self._strikes.clear()
                return count
            self._strikes.pop(ip, None)
            return 1 if self._bans.pop(ip, None) is not None else 0

    def clear(self) -> None:
        """Forget every window, strike and ban (a test's clean slate)."""
        with self.lock:
            self._windows.clear()
            self._strikes.clear()
            self._bans.clear()

    def snapshot(self, now: float) -> dict[str, Any]:
        with self.lock:
            windows: dict[str, dict[str, int]] = {}
            for (scope, key), window in self._windows.items():
                live = sum(1 for t in window if t > now - WINDOW)
                windows.setdefault(scope, {})[key] = live
            return {
                "windows": windows,
                "strikes": {ip: len(s) for ip, s in self._strikes.items() if s},
                "bans": [b.as_json(now) for b in self._bans.values() if b.active(now)],
            }
