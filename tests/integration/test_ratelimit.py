"""The cross-process amoCRM throttle holds 7 requests/s across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.ratelimit import MySqlThrottle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys, time
from shared.db import get_database
from shared.ratelimit import MySqlThrottle
throttle = MySqlThrottle(get_database(), sys.argv[1], rate=7)
for _ in range(int(sys.argv[2])):
    throttle.acquire()
    print(time.time(), flush=True)
"""


def max_in_any_second(stamps: list[float]) -> int:
    stamps = sorted(stamps)
    best = 0
    for i, start in enumerate(stamps):
        j = i
        while j < len(stamps) and stamps[j] < start + 1.0:
            j += 1
        best = max(best, j - i)
    return best


def test_three_processes_share_seven_per_second(db, isolated_env) -> None:  # type: ignore[no-untyped-def]
    key = f"acct-{time.time_ns()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, key, "7"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    stamps: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        stamps += [float(line) for line in out.split()]
    assert len(stamps) == 21
    assert max_in_any_second(stamps) <= 7
    # …and it is not slower than it needs to be: 21 slots at ~7/s take about 3 s.
    assert max(stamps) - min(stamps) < 4.5


def test_pause_holds_back_every_caller(db) -> None:  # type: ignore[no-untyped-def]
    key = f"acct-{time.time_ns()}"
    throttle = MySqlThrottle(db, key, rate=7)
    throttle.acquire()
    throttle.pause(1.0)
    started = time.monotonic()
    MySqlThrottle(db, key, rate=7).acquire()
    assert time.monotonic() - started >= 0.9
