"""Unisender's call limits: sliding windows per API key and per client IP.

Docs: 1,200 calls per minute per API key AND per IP, two counters with two error codes
(`api_call_limit_exceeded_for_api_key` / `api_call_limit_exceeded_for_ip`). Some methods have
their own, lower limit "from one API key or IP address": `subscribe` 300 / 60 s,
`async/exportContacts` 20 / 60 s (`sendEmail` 60 / min is not emulated).

[unverified] and taken strictly here: the IP counter sees every API request, also those with a
wrong key or an unknown method (an IP limit sits in front of authentication); a refused call is
not counted (otherwise a client that keeps retrying would never get out). How long a block lasts
is undocumented: the window simply slides.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Methods with a limit of their own, calls per window (docs).
METHOD_LIMITS = {"subscribe": 300, "async/exportContacts": 20}


@dataclass
class LimitHit:
    """Which counter refused the call: `scope` is "api_key" or "ip"."""

    scope: str
    limit: int
    window_seconds: float
    method: str | None  # set when a per-method limit refused it

    @property
    def code(self) -> str:
        return f"api_call_limit_exceeded_for_{self.scope}"


@dataclass
class Windows:
    """Timestamps of accepted calls per (scope, who, method-or-all)."""

    clock: Callable[[], float] = time.monotonic
    calls: dict[tuple[str, str, str], deque[float]] = field(default_factory=dict)

    def _fill(self, key: tuple[str, str, str], window: float, now: float) -> deque[float]:
        stamps = self.calls.setdefault(key, deque())
        while stamps and stamps[0] <= now - window:
            stamps.popleft()
        return stamps

    def admit(
        self,
        checks: list[tuple[str, str, str | None, int]],
        window: float,
    ) -> LimitHit | None:
        """Record one call if every (scope, who, method, limit) has room; else the first hit.

        A limit of 0 or less means "no limit" for that check.
        """
        now = self.clock()
        windows = []
        for scope, who, method, limit in checks:
            if limit <= 0:
                continue
            stamps = self._fill((scope, who, method or "*"), window, now)
            if len(stamps) >= limit:
                return LimitHit(scope, limit, window, method)
            windows.append(stamps)
        for stamps in windows:
            stamps.append(now)
        return None

    def snapshot(self, window: float) -> dict[str, dict[str, int]]:
        """Calls in the current window: {"api_key": {who: n}, "ip": {who: n}} (all methods)."""
        now = self.clock()
        out: dict[str, dict[str, int]] = {"api_key": {}, "ip": {}}
        for (scope, who, method), _ in list(self.calls.items()):
            stamps = self._fill((scope, who, method), window, now)
            if stamps:
                label = who if method == "*" else f"{who} {method}"
                out.setdefault(scope, {})[label] = len(stamps)
        return out

    def clear(self) -> None:
        self.calls.clear()
