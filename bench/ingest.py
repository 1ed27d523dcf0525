"""Webhook ingest through nginx, against a trivial functions-framework handler (same nginx).

    .venv/bin/python -m bench.ingest [--seconds 8] [--connections 1,16,64] [--contacts 1,10]

Both targets get the same gateway template, the same gunicorn settings, the same amoCRM-shaped
body and the same load generator (wrk, loopback only, each point bounded to `--seconds`), run
alternately so background noise hits both. Every 2xx of the webhook is then checked on the queue:
one contact-events job per accepted POST, carrying every contact of the body.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import greenstalk
import requests

from bench.harness import (
    BenchStack,
    WrkResult,
    bench_stack,
    connect_account,
    record_section,
    run_wrk,
    table,
)
from devstack.stack import FUNCTION_ENV

FORM = "application/x-www-form-urlencoded"
TARGET_RATIO = 0.8
TARGET_P99_MS = 50.0


@dataclass
class Account:
    """An amoCRM sandbox account installed in amosync, with its webhook destination."""

    id: int
    subdomain: str
    webhook_url: str | None  # None while the webhook feature is missing: trivial-only run


def prepare_account(bs: BenchStack) -> Account:
    """Install a sandbox account and connect Unisender the way a user would (e2e flows)."""
    try:
        connected = connect_account(bs)
    except ImportError:
        account = requests.get(f"{bs.amocrm}/_sandbox/accounts", timeout=5).json()[0]
        return Account(account["id"], account["subdomain"], None)
    account = requests.get(f"{bs.amocrm}/_sandbox/accounts/{connected.account_id}", timeout=5)
    return Account(connected.account_id, account.json()["subdomain"], connected.webhook_destination)


def amocrm_bodies(bs: BenchStack, account: Account, sizes: list[int]) -> dict[int, bytes]:
    """Real sandbox webhook bodies: `n` contact updates in one POST, as amoCRM sends them."""
    base = f"{bs.amocrm}/_sandbox/accounts/{account.id}"
    created = requests.post(
        f"{base}/changes",
        json={
            "add": [
                {
                    "name": f"Bench Contact {i}",
                    "emails": [
                        {"value": f"bench{i}@example.com", "enum": "WORK"},
                        f"bench{i}.home@example.org",
                    ],
                }
                for i in range(max(sizes))
            ],
            "notify": False,
        },
        timeout=30,
    ).json()["added"]
    bodies: dict[int, bytes] = {}
    for n in sizes:
        requests.delete(f"{bs.amocrm}/_sandbox/deliveries", timeout=5)
        updates = [{"id": cid, "name": f"Bench Contact {cid} v2"} for cid in created[:n]]
        result = requests.post(
            f"{base}/changes", json={"update": updates, "notify": True}, timeout=30
        ).json()
        if not result["deliveries"]:
            raise SystemExit(f"the sandbox delivered no webhook for {account.subdomain}")
        deliveries = requests.get(
            f"{bs.amocrm}/_sandbox/deliveries", params={"account_id": account.id}, timeout=5
        ).json()
        bodies[n] = urlencode([tuple(p) for p in deliveries[-1]["body"]]).encode()
    return bodies


def subscribe_capture(bs: BenchStack, account: Account, destination: str) -> None:
    """Without the webhook feature, subscribe a destination ourselves to get real bodies."""
    tokens = requests.post(f"{bs.amocrm}/_sandbox/accounts/{account.id}/tokens", timeout=5).json()
    requests.post(
        f"{bs.amocrm}/api/v4/webhooks",
        json={"destination": destination, "settings": ["update_contact", "add_contact"]},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=5,
    ).raise_for_status()


def drain_events(bs: BenchStack) -> tuple[int, int]:
    """Take every job off contact-events: (jobs, events). Nothing consumes them meanwhile."""
    import json

    client = greenstalk.Client(
        ("127.0.0.1", bs.stack.ports.beanstalk), watch="contact-events", use="contact-events"
    )
    jobs = events = 0
    try:
        while True:
            try:
                job = client.reserve(timeout=0)
            except greenstalk.TimedOutError:
                break
            events += len(json.loads(job.body)["events"])
            jobs += 1
            client.delete(job)
    finally:
        client.close()
    return jobs, events


@dataclass
class Point:
    contacts: int
    connections: int
    trivial: WrkResult
    webhook: WrkResult | None
    jobs: int = 0
    events: int = 0


def fmt_ms(r: WrkResult | None) -> str:
    return "-" if r is None else f"{r.p50_ms:.1f} / {r.p99_ms:.1f}"


def profile_webhook(bs: BenchStack, url: str, body: bytes, seconds: float, out: Path) -> None:
    """py-spy over the webhook's gunicorn workers while 64 connections post (where time goes)."""
    proc = bs.stack.processes["function-webhook"].popen
    assert proc is not None
    pids = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    spy = Path(sys.executable).parent / "py-spy"
    recorders = [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                pid,
                "--duration",
                str(int(seconds)),
                "--format",
                "raw",
                "--output",
                str(out.with_suffix(f".{pid}.txt")),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]
    time.sleep(0.5)
    run_wrk(url, body, connections=64, seconds=seconds, content_type=FORM)
    for r in recorders:
        r.wait(60)
    print(f"py-spy profiles: {out.parent}/{out.stem}.*.txt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured point")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--contacts", default="1,10", help="contacts per webhook POST")
    parser.add_argument("--workers", type=int, default=int(FUNCTION_ENV["webhook"]["WORKERS"]))
    parser.add_argument("--threads", type=int, default=int(FUNCTION_ENV["webhook"]["THREADS"]))
    parser.add_argument("--profile", type=Path, help="py-spy the webhook at 64 connections")
    parser.add_argument("--no-record", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    conns = [int(c) for c in args.connections.split(",")]
    sizes = [int(c) for c in args.contacts.split(",")]
    gunicorn = {"WORKERS": str(args.workers), "THREADS": str(args.threads)}

    points: list[Point] = []
    with bench_stack(function_env={"webhook": gunicorn}) as bs:
        trivial_port = bs.start_function(
            "function-trivial", "bench/trivial/main.py", "bench_trivial", env=gunicorn
        )
        trivial_gw = bs.start_gateway("gateway-trivial", {"webhook": trivial_port})
        account = prepare_account(bs)
        trivial_url = f"{trivial_gw}/webhook/{account.id}/trivial"
        if account.webhook_url is None:
            print("functions/webhook is not there yet: measuring the trivial handler only")
            subscribe_capture(bs, account, trivial_url)
        bodies = amocrm_bodies(bs, account, sizes)
        webhook_url = (
            account.webhook_url.replace(bs.env["PUBLIC_URL"], bs.url)
            if account.webhook_url
            else None
        )
        drain_events(bs)
        # Warm both (imports, connection pools, nginx upstream keepalive) before measuring.
        for url in filter(None, (trivial_url, webhook_url)):
            run_wrk(url, bodies[sizes[0]], connections=16, seconds=2, content_type=FORM)
        drain_events(bs)
        for n in sizes:
            for c in conns:
                trivial = run_wrk(
                    trivial_url, bodies[n], connections=c, seconds=args.seconds, content_type=FORM
                )
                point = Point(n, c, trivial, None)
                if webhook_url:
                    point.webhook = run_wrk(
                        webhook_url,
                        bodies[n],
                        connections=c,
                        seconds=args.seconds,
                        content_type=FORM,
                    )
                    point.jobs, point.events = drain_events(bs)
                points.append(point)
                print_point(point)
        if args.profile and webhook_url:
            profile_webhook(bs, webhook_url, bodies[max(sizes)], args.seconds, args.profile)
            drain_events(bs)

    failures = check(points)
    body = render(points, gunicorn, failures)
    print(body)
    if not args.no_record:
        record_section("ingest", "Webhook ingest through nginx", body, argv=argv)
    return 1 if any(n.startswith("LOST") for n in failures) else 0


def print_point(p: Point) -> None:
    line = (
        f"{p.contacts:>2} contacts  c={p.connections:<3} trivial {p.trivial.rps:8.0f} rps "
        f"p50/p99 {fmt_ms(p.trivial)} ms"
    )
    if p.webhook:
        line += (
            f" | webhook {p.webhook.rps:8.0f} rps p50/p99 {fmt_ms(p.webhook)} ms"
            f" ratio {p.webhook.rps / p.trivial.rps:.2f}"
            f" | 2xx {p.webhook.ok}, jobs {p.jobs}, events {p.events}"
        )
    print(line, flush=True)


def check(points: list[Point]) -> list[str]:
    """The issue's targets, and the queue verification, as sentences for the report."""
    notes: list[str] = []
    for p in points:
        if p.webhook is None:
            continue
        # wrk stops counting at the deadline with up to one request per connection in flight:
        # those may be queued without their 2xx being seen, never the other way round.
        if not p.webhook.ok <= p.jobs <= p.webhook.ok + p.connections or (
            p.events != p.jobs * p.contacts
        ):
            notes.append(
                f"LOST EVENTS at {p.contacts} contacts x {p.connections} connections: "
                f"{p.webhook.ok} accepted, {p.jobs} jobs / {p.events} events on the queue"
            )
        if p.connections == 64:
            ratio = p.webhook.rps / p.trivial.rps
            if ratio < TARGET_RATIO:
                notes.append(
                    f"ratio {ratio:.2f} < {TARGET_RATIO} at 64 connections, {p.contacts} contacts"
                )
            if p.webhook.p99_ms >= TARGET_P99_MS:
                notes.append(
                    f"p99 {p.webhook.p99_ms:.1f} ms ≥ {TARGET_P99_MS:.0f} ms at 64 connections, "
                    f"{p.contacts} contacts"
                )
    return notes


def render(points: list[Point], gunicorn: dict[str, str], failures: list[str]) -> str:
    rows = []
    for p in points:
        w = p.webhook
        rows.append(
            [
                p.contacts,
                p.connections,
                f"{p.trivial.rps:.0f}",
                f"{w.rps:.0f}" if w else "-",
                f"**{w.rps / p.trivial.rps:.2f}**" if w else "-",
                fmt_ms(p.trivial),
                fmt_ms(w),
                f"{w.ok} / {w.bad + w.errors}" if w else "-",
                f"{p.jobs} / {p.events}" if w else "-",
            ]
        )
    text = table(
        [
            "contacts/POST",
            "connections",
            "trivial rps",
            "webhook rps",
            "ratio",
            "trivial p50 / p99 ms",
            "webhook p50 / p99 ms",
            "webhook 2xx / other",
            "jobs / events on queue",
        ],
        rows,
    )
    verdict = (
        "Targets (ratio ≥ 0.8 and p99 < 50 ms at 64 connections; every accepted event queued): "
        + ("**met**." if not failures else "**missed**: " + "; ".join(failures) + ".")
    )
    return (
        f"Load: wrk, keep-alive connections, one fixed body per point, "
        f"{points[0].trivial.seconds:.0f} s per point; gunicorn WORKERS={gunicorn['WORKERS']} "
        f"THREADS={gunicorn['THREADS']} for both targets (`devstack/stack.py::FUNCTION_ENV`, "
        f"the same as docker-compose.yml); nginx keepalive 64 to the webhook upstream.\n\n"
        f"{text}\n\n{verdict}\n"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
