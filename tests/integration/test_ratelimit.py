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
    # The slot is what the throttle promises; printing after the sleep would measure how late
    # a loaded machine wakes the process as well.
    now, slot = throttle.reserve()
    time.sleep(max(0.0, slot - now))
    print(slot, flush=True)
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


ACCOUNT_WORKER = """
import sys, time
from shared.db import get_database
from shared.ratelimit import MySqlThrottle
from shared.settings import get_settings
from shared.tokens import amocrm_budgets
account_id, count, bulk = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "bulk"
budgets = amocrm_budgets(account_id, get_settings(), bulk=bulk)
throttle = MySqlThrottle(get_database(), budgets)
for _ in range(count):
    now, slot = throttle.reserve()
    time.sleep(max(0.0, slot - now))
    print(slot, flush=True)
"""


def _run_accounts(plan: list[tuple[int, int, str]]) -> list[list[float]]:
    """Start one process per (account id, requests, lane); return each one's send times."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ACCOUNT_WORKER, str(account), str(count), lane],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for account, count, lane in plan
    ]
    return [[float(line) for line in proc.communicate(timeout=90)[0].split()] for proc in procs]


@pytest.fixture
def fresh_egress(isolated_env, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    """An egress id of this test only, so no earlier test's reservations are in its way."""
    egress = f"test-{time.time_ns()}"
    monkeypatch.setenv("EGRESS_ID", egress)
    return egress


def test_accounts_together_stay_within_the_ip_budget(db, fresh_egress: str) -> None:  # type: ignore[no-untyped-def]
    # Three accounts, each well within its own 7/s: before the IP budget they sent 21/s together,
    # which is what gets an egress IP banned by amoCRM.
    base = time.time_ns() % 1_000_000
    runs = _run_accounts(
        [(base + 1, 7, "interactive"), (base + 2, 7, "bulk"), (base + 3, 7, "bulk")]
    )
    stamps = [stamp for run in runs for stamp in run]
    assert len(stamps) == 21
    assert max_in_any_second(stamps) <= 7


def test_bulk_work_leaves_room_for_interactive_work(db, fresh_egress: str) -> None:  # type: ignore[no-untyped-def]
    # Two bulk accounts flood for several seconds; an interactive account's requests must still
    # get the interactive share (at least 30% of 7/s) instead of queueing behind the flood.
    base = time.time_ns() % 1_000_000
    bulk_a, bulk_b, interactive = _run_accounts(
        [(base + 1, 14, "bulk"), (base + 2, 14, "bulk"), (base + 3, 8, "interactive")]
    )
    bulk = sorted(bulk_a + bulk_b)
    # Bulk alone never gets more than its share: 70% of 7/s, i.e. at most 5 in any second.
    assert max_in_any_second(bulk) <= 5
    # The interactive account's 8 requests all went out while the bulk flood was still running.
    assert max(interactive) < max(bulk)
    assert max_in_any_second(sorted(bulk + interactive)) <= 7
