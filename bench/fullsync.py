"""Full sync of a large account: requests against the minimum, wall time against the rate limit.

    .venv/bin/python -m bench.fullsync [--contacts 10000] [--large 100000] [--latency-ms 50]

The amoCRM sandbox enforces amoCRM's 7 requests/s per account and adds `--latency-ms` to every
API call. One account per size, each with its own freshly started full-sync consumer so its
peak RSS (VmHWM) belongs to that size alone. The run is started the way an operator does
(`GET /sync?name=…` with the admin bearer) and polled on `/sync/status`.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import greenstalk
import requests

from bench.harness import (
    BenchStack,
    bench_stack,
    connect_account,
    peak_rss_mb,
    record_section,
    table,
    wait_until,
)

PAGE = 250
IMPORT_ROWS = 500
TARGET_WALL_RATIO = 1.1
TARGET_RSS_RATIO = 1.3


@dataclass
class SyncFigures:
    contacts: int
    emails: int
    amo_list_requests: int
    amo_other_requests: int
    amo_429: int
    amo_max_per_second: int
    import_calls: int
    other_unisender_calls: int
    wall_seconds: float
    rows_imported: int
    list_members: int
    rss_mb: float
    rps: float
    # Seconds after `GET /sync` at which amoCRM saw the run's first and last contact-page request.
    first_page_s: float = 0.0
    last_page_s: float = 0.0

    @property
    def min_list_requests(self) -> int:
        # A full last page carries _links.next, so the page after it (a 204) must be read too.
        return self.contacts // PAGE + 1

    @property
    def min_imports(self) -> int:
        return math.ceil(self.emails / IMPORT_ROWS)

    @property
    def bound_seconds(self) -> float:
        """The rate limit alone: every amoCRM request of the run at `rps`, back to back."""
        return (self.amo_list_requests + self.amo_other_requests) / self.rps

    @property
    def min_bound_seconds(self) -> float:
        return self.min_list_requests / self.rps


def max_per_second(times: list[float]) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def seed(bs: BenchStack, account_id: int, count: int) -> None:
    """`count` contacts with one address each, without webhooks, in chunks the sandbox likes."""
    done = 0
    while done < count:
        n = min(20_000, count - done)
        requests.post(
            f"{bs.amocrm}/_sandbox/accounts/{account_id}/changes",
            json={"generate": n, "notify": False},
            timeout=300,
        ).raise_for_status()
        done += n


def consumer_watching(bs: BenchStack) -> bool:
    """Whether a consumer is blocked on the full-sync tube (connected, ready for a job)."""
    client = greenstalk.Client(("127.0.0.1", bs.stack.ports.beanstalk))
    try:
        return int(client.stats_tube("full-sync").get("current-watching", 0)) > 0
    except greenstalk.NotFoundError:
        return False
    finally:
        client.close()


def admin(bs: BenchStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {bs.env['ADMIN_TOKEN']}"}


def measure(
    bs: BenchStack, connected: Any, contacts: int, rps: float, profile: Path | None = None
) -> SyncFigures:
    """Seed, restart the consumer, run one full sync, and read every counter the stack has."""
    from testing.widget import unisender_state

    account_id, api_key = connected.account_id, connected.api_key
    name = requests.get(
        f"{bs.url}/sync/status", params={"account_id": account_id}, headers=admin(bs), timeout=10
    )
    # The widget's connect started a first (empty) sync: let it finish before seeding.
    if name.status_code == 200:
        wait_until(
            lambda: requests.get(
                f"{bs.url}/sync/status",
                params={"account_id": account_id},
                headers=admin(bs),
                timeout=10,
            ).json()["finished"],
            timeout=120,
            what="the connect-time sync",
        )
    seed(bs, account_id, contacts)
    # A fresh consumer: its peak RSS is this run's alone. Timed from when it waits for jobs, as
    # a running deployment's does (its start-up, ~1 s of imports, is not the sync's time).
    bs.stack.restart("worker-full-sync")
    wait_until(lambda: consumer_watching(bs), timeout=60, what="the full-sync consumer")
    requests.delete(f"{bs.amocrm}/_sandbox/requests", timeout=10).raise_for_status()
    requests.delete(f"{bs.unisender}/_sandbox/keys/{api_key}/calls", timeout=10)
    started = time.monotonic()
    since = time.time()
    resp = requests.get(
        f"{bs.url}/sync", params={"account_id": account_id}, headers=admin(bs), timeout=10
    )
    assert resp.status_code in (200, 202), resp.text
    run_id = resp.json()["run_id"]
    spy = None
    if profile is not None:
        consumer = bs.stack.processes["worker-full-sync"].popen
        assert consumer is not None
        # Wall-clock samples (--idle): where the consumer waits matters as much as where it works.
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(consumer.pid),
                "--idle",
                "--format",
                "raw",
                "--output",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finished() -> dict[str, Any] | None:
        body = requests.get(
            f"{bs.url}/sync/status", params={"run_id": run_id}, headers=admin(bs), timeout=10
        ).json()
        return body if body["finished"] else None

    run = wait_until(finished, timeout=contacts / 100 + 120, interval=0.1, what=f"run {run_id}")
    wall = time.monotonic() - started
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    assert run["status"] == "done", run
    worker = bs.stack.processes["worker-full-sync"].popen
    assert worker is not None
    rss = peak_rss_mb(worker.pid)
    log = requests.get(
        f"{bs.amocrm}/_sandbox/requests", params={"account_id": account_id}, timeout=30
    ).json()
    log = [e for e in log if e["at"] >= since and e["path"].startswith("/api/v4")]
    list_calls = [e for e in log if e["path"] == "/api/v4/contacts"]
    calls = requests.get(f"{bs.unisender}/_sandbox/keys/{api_key}/calls", timeout=30).json()
    counts = calls.get("counts") or {}
    imports = int(counts.get("importContacts", 0))
    state = unisender_state(bs.stack, api_key)
    members = sum(
        1 for c in state["contacts"] if any(m["id"] == connected.list_id for m in c["lists"])
    )
    return SyncFigures(
        contacts=contacts,
        emails=contacts,
        amo_list_requests=len(list_calls),
        amo_other_requests=len(log) - len(list_calls),
        amo_429=sum(1 for e in log if e["status"] == 429),
        amo_max_per_second=max_per_second([e["at"] for e in log]),
        import_calls=imports,
        other_unisender_calls=sum(int(v) for v in counts.values()) - imports,
        wall_seconds=wall,
        rows_imported=int(run["rows_imported"]),
        list_members=members,
        rss_mb=rss,
        rps=rps,
        first_page_s=min((e["at"] for e in list_calls), default=since) - since,
        last_page_s=max((e["at"] for e in list_calls), default=since) - since,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=0, help="also this many (e.g. 100000)")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the consumer")
    args = parser.parse_args(argv)
    rps = 7.0
    sizes = [args.contacts, *([args.large] if args.large else [])]
    results: list[SyncFigures] = []
    env = {
        "SANDBOX_AMOCRM_LATENCY_MS": str(args.latency_ms),
        "SANDBOX_AMOCRM_RATE_LIMIT": "7",
        "AMOCRM_RATE_LIMIT_RPS": str(rps),
        "LOG_LEVEL": "INFO",
    }
    with bench_stack(workers=("full-sync",), env=env) as bs:
        for size in sizes:
            connected = connect_account(bs)
            figures = measure(bs, connected, size, rps, args.profile if size == sizes[0] else None)
            results.append(figures)
            print_figures(figures)
    notes = check(results)
    body = render(results, args.latency_ms, notes)
    print(body)
    if not args.no_record:
        record_section("fullsync", "Full sync", body, argv=argv)
    return 0


def print_figures(f: SyncFigures) -> None:
    print(
        f"{f.contacts} contacts: amoCRM list requests {f.amo_list_requests} "
        f"(min {f.min_list_requests}), other {f.amo_other_requests}, 429s {f.amo_429}, "
        f"max {f.amo_max_per_second}/s; imports {f.import_calls} (min {f.min_imports}); "
        f"wall {f.wall_seconds:.1f}s vs bound {f.bound_seconds:.1f}s "
        f"({f.wall_seconds / f.bound_seconds:.2f}x; first page at {f.first_page_s:.2f}s, "
        f"last at {f.last_page_s:.2f}s); RSS {f.rss_mb:.0f} MiB; "
        f"imported {f.rows_imported}, in list {f.list_members}",
        flush=True,
    )


def check(results: list[SyncFigures]) -> list[str]:
    notes = []
    for f in results:
        if f.amo_list_requests != f.min_list_requests:
            notes.append(
                f"{f.contacts}: {f.amo_list_requests} contact-list requests, "
                f"minimum {f.min_list_requests}"
            )
        if f.import_calls != f.min_imports:
            notes.append(f"{f.contacts}: {f.import_calls} imports, minimum {f.min_imports}")
        if f.wall_seconds > TARGET_WALL_RATIO * f.bound_seconds:
            notes.append(
                f"{f.contacts}: wall {f.wall_seconds:.1f} s > {TARGET_WALL_RATIO} x "
                f"{f.bound_seconds:.1f} s"
            )
        if f.list_members != f.emails or f.amo_429:
            notes.append(
                f"{f.contacts}: {f.list_members} of {f.emails} in the list, {f.amo_429} x 429"
            )
    if len(results) > 1 and results[1].rss_mb > TARGET_RSS_RATIO * results[0].rss_mb:
        notes.append(
            f"RSS {results[1].rss_mb:.0f} MiB at {results[1].contacts} > {TARGET_RSS_RATIO} x "
            f"{results[0].rss_mb:.0f} MiB at {results[0].contacts}"
        )
    return notes


def render(results: list[SyncFigures], latency_ms: int, notes: list[str]) -> str:
    rows = [
        [
            f"{f.contacts:,}",
            f"{f.amo_list_requests} (min {f.min_list_requests})",
            f.amo_other_requests,
            f"{f.amo_max_per_second} / {f.amo_429}",
            f"{f.import_calls} (min {f.min_imports})",
            f.other_unisender_calls,
            f"{f.wall_seconds:.1f}",
            f"{f.bound_seconds:.1f}",
            f"**{f.wall_seconds / f.bound_seconds:.2f}**",
            f"{f.first_page_s:.2f} / {f.last_page_s - f.first_page_s:.2f} / "
            f"{f.wall_seconds - f.last_page_s:.2f}",
            f"{f.rss_mb:.0f}",
            f"{f.list_members:,}",
        ]
        for f in results
    ]
    text = table(
        [
            "contacts (1 email each)",
            "amoCRM contact pages",
            "other amoCRM calls",
            "max req/s / 429s",
            "importContacts",
            "other Unisender calls",
            "wall s",
            "rate-limit bound s",
            "wall / bound",
            "wall: to 1st page / pages / after last s",
            "consumer peak RSS MiB",
            "in the list after",
        ],
        rows,
    )
    rss = ""
    if len(results) > 1:
        rss = (
            f"\nConsumer RSS at {results[1].contacts:,} / at {results[0].contacts:,}: "
            f"**{results[1].rss_mb / results[0].rss_mb:.2f}x** (target ≤ {TARGET_RSS_RATIO}).\n"
        )
    verdict = (
        "Targets (pages and imports at the minimum, wall ≤ 1.1 x bound, RSS ratio ≤ 1.3): "
        + ("**met**." if not notes else "**missed**: " + "; ".join(notes) + ".")
    )
    return (
        f"amoCRM sandbox: 7 requests/s per account, {latency_ms} ms added to every API call; "
        "Unisender sandbox without added latency. The bound is every amoCRM request the run "
        "made, at 7/s back to back; the minimum of contact pages is floor(N/250) + 1 (a full "
        "last page links to one more, answered 204). Wall time: from `GET /sync` to "
        "`/sync/status` saying done (polled every 0.1 s), split at amoCRM's arrival of the "
        "first and last contact-page request.\n\n"
        f"{text}\n{rss}\n{verdict}\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
