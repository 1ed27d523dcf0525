"""Capped exponential backoff with jitter, shared by the vendor clients and the queue."""

from __future__ import annotations

import random


def jittered_backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry `attempt` (1-based): uniform in [ceiling/2, ceiling].

    The ceiling doubles per attempt up to `cap`; the jitter keeps many workers from retrying in
    lockstep, the lower half-bound keeps the backoff growing.
    """
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
