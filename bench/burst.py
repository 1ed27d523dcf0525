"""Event burst: 10k contact updates through webhooks → how many Unisender calls, how fast.

    .venv/bin/python -m bench.burst [--events 10000] [--per-post 10] [--senders 8]

An account with `--events` contacts is synced first (full sync). Then every contact is renamed in
the amoCRM sandbox, `--per-post` contacts per change, which the sandbox delivers as real webhook
POSTs through the gateway, from `--senders` threads at once. Measured: importContacts calls for
the burst, the drain time (first webhook sent → last row acknowledged by Unisender), and per
event the latency from its webhook's start to amosync recording Unisender's acknowledgement of
that contact's row (`list_members.updated_at`, written right after the import call returns).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from bench.fullsync import admin, seed
from bench.harness import (
    BenchStack,
    bench_stack,
    connect_account,
    percentile,
    record_section,
    table,
    wait_until,
)

TARGET_IMPORTS = 25


@dataclass
class BurstFigures:
    events: int
    per_post: int
    posts: int
    failed_posts: int
    send_seconds: float
    drain_seconds: float
    import_calls: int
    rows_imported: int
    exclude_calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    applied: int


def sync_first(bs: BenchStack, account_id: int) -> None:
    resp = requests.get(
        f"{bs.url}/sync", params={"account_id": account_id}, headers=admin(bs), timeout=10
    )
    run_id = resp.json()["run_id"]
    wait_until(
        lambda: requests.get(
            f"{bs.url}/sync/status", params={"run_id": run_id}, headers=admin(bs), timeout=10
        ).json()["finished"],
        timeout=600,
        what="the initial full sync",
    )


def contact_ids(bs: BenchStack, account_id: int) -> list[int]:
    items = requests.get(f"{bs.amocrm}/_sandbox/accounts/{account_id}/contacts", timeout=120)
    return sorted(c["id"] for c in items.json() if c["type"] == "contact" and not c["deleted"])


def applied_times(bs: BenchStack, account_id: int, marker: str) -> dict[str, float]:
    """email → when amosync recorded Unisender's acknowledgement of the renamed row."""
    with bs.settings_env():
        from shared.db import get_database

        rows = get_database().fetch_all(
            "SELECT email, UNIX_TIMESTAMP(updated_at) AS at FROM list_members "
            "WHERE account_id = %s AND name_sent LIKE %s",
            (account_id, f"%{marker}%"),
        )
    return {r["email"]: float(r["at"]) for r in rows}


def run_burst(bs: BenchStack, events: int, per_post: int, senders: int) -> BurstFigures:
    connected = connect_account(bs)
    account_id, api_key = connected.account_id, connected.api_key
    seed(bs, account_id, events)
    sync_first(bs, account_id)
    ids = contact_ids(bs, account_id)[:events]
    emails = {
        c["id"]: next(
            v["value"].lower()
            for f in c.get("custom_fields_values") or []
            if f.get("field_code") == "EMAIL"
            for v in f["values"]
        )
        for c in requests.get(
            f"{bs.amocrm}/_sandbox/accounts/{account_id}/contacts", timeout=120
        ).json()
        if c["id"] in set(ids)
    }
    requests.delete(f"{bs.unisender}/_sandbox/keys/{api_key}/calls", timeout=10)
    marker = f"burst{int(time.time())}"
    chunks = [ids[i : i + per_post] for i in range(0, len(ids), per_post)]
    sent_at: dict[int, float] = {}

    def post(chunk: list[int]) -> bool:
        started = time.time()
        resp = requests.post(
            f"{bs.amocrm}/_sandbox/accounts/{account_id}/changes",
            json={
                "update": [{"id": cid, "name": f"Contact {cid} {marker}"} for cid in chunk],
                "notify": True,
            },
            timeout=60,
        )
        ok = resp.status_code == 200 and all(
            d.get("status") == 200 for d in resp.json().get("deliveries", [])
        )
        for cid in chunk:
            sent_at[cid] = started
        return ok

    first = time.time()
    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(post, chunks))
    send_seconds = time.time() - first
    wanted = {emails[cid] for cid in ids}

    def all_applied() -> dict[str, float] | None:
        got = applied_times(bs, account_id, marker)
        return got if wanted <= set(got) else None

    applied = wait_until(all_applied, timeout=600, interval=0.5, what="every renamed row")
    latencies = [(applied[emails[cid]] - sent_at[cid]) * 1000 for cid in ids]
    calls = requests.get(f"{bs.unisender}/_sandbox/keys/{api_key}/calls", timeout=30).json()
    imports = [e for e in calls["log"] if e["method"] == "importContacts"]
    return BurstFigures(
        events=len(ids),
        per_post=per_post,
        posts=len(chunks),
        failed_posts=results.count(False),
        send_seconds=send_seconds,
        drain_seconds=max(applied.values()) - first,
        import_calls=len(imports),
        rows_imported=sum(e.get("rows") or 0 for e in imports),
        exclude_calls=int(calls["counts"].get("exclude", 0)),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies),
        applied=len(applied),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--per-post", type=int, default=10)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    with bench_stack(workers=("contact-events", "full-sync")) as bs:
        f = run_burst(bs, args.events, args.per_post, args.senders)
    body = render(f)
    print(body)
    if not args.no_record:
        record_section("burst", "Event burst", body, argv=argv)
    return 0 if f.failed_posts == 0 and f.applied >= f.events else 1


def render(f: BurstFigures) -> str:
    minimum = math.ceil(f.events / 500)
    rows = [
        [
            f"{f.events:,}",
            f"{f.posts:,} x {f.per_post}",
            f.failed_posts,
            f"{f.send_seconds:.1f}",
            f"**{f.import_calls}** (min {minimum})",
            f"{f.rows_imported:,}",
            f.exclude_calls,
            f"{f.drain_seconds:.1f}",
            f"{f.p50_ms:.0f} / {f.p99_ms:.0f} / {f.max_ms:.0f}",
        ]
    ]
    text = table(
        [
            "update events",
            "webhook POSTs",
            "failed POSTs",
            "sending s",
            "importContacts",
            "rows imported",
            "exclude calls",
            "drain s",
            "latency p50 / p99 / max ms",
        ],
        rows,
    )
    ok = f.import_calls <= TARGET_IMPORTS and f.failed_posts == 0 and f.applied >= f.events
    verdict = f"Target (≤ {TARGET_IMPORTS} import calls, every event applied): " + (
        "**met**." if ok else "**missed**."
    )
    return (
        "Each POST is a real sandbox webhook (a rename of `per_post` contacts) through nginx to "
        "functions/webhook; one contact-events consumer. Drain: first webhook sent → last row "
        "acknowledged. Latency: a contact's webhook start → amosync recording Unisender's "
        "acknowledgement of its row.\n\n"
        f"{text}\n\n{verdict}\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
