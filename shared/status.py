"""What operators look at: accounts, sync runs, queues, parked jobs, import errors, event rate.

`collect_status` gathers one snapshot (the CLI prints it, the status page renders it);
`render_status_page` turns it into a self-contained HTML page: no scripts, no external assets,
every value escaped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any

from shared.blocks import list_holds, support_note
from shared.clock import utcnow
from shared.db import Database, Row
from shared.jobqueue import QueueUnavailable, get_queue
from shared.jobs import JOB_TYPES
from shared.list_binding import SharedList, shared_lists
from shared.workers import WorkerRegistry

log = logging.getLogger(__name__)

CHART_MINUTES = 60
QUEUE_KEYS = (
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-delayed",
    "current-jobs-buried",
    "current-watching",
    "total-jobs",
)


@dataclass
class StatusSnapshot:
    """Everything the status page and `amosync status` show, read at `taken_at` (UTC)."""

    taken_at: datetime
    accounts: list[Row] = field(default_factory=list)
    runs: list[Row] = field(default_factory=list)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue_error: str | None = None
    parked: list[Row] = field(default_factory=list)
    import_errors: list[Row] = field(default_factory=list)
    events_per_minute: list[tuple[datetime, int]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    # amoCRM 403 blocks in force, each with what to tell amoCRM support (the operator alert).
    blocks: list[dict[str, Any]] = field(default_factory=list)
    # Accounts writing into a list another account is bound to (see shared.list_binding).
    shared_lists: list[SharedList] = field(default_factory=list)


def account_rows(db: Database) -> list[Row]:
    """Accounts with token expiry, Unisender list and member counts (no secrets are read)."""
    return db.fetch_all(
        "SELECT a.id, a.name, a.host, a.status, a.status_reason, t.expires_at AS token_expires_at, "
        "IF(a.paused_until > UTC_TIMESTAMP(6), a.paused_until, NULL) AS paused_until, "
        "a.paused_reason, "
        "u.list_id, u.list_title, "
        "(SELECT COUNT(*) FROM list_members m WHERE m.account_id = a.id AND m.state = 'member') "
        "AS members, "
        "(SELECT COUNT(*) FROM list_members m WHERE m.account_id = a.id AND m.state = 'failed') "
        "AS failed, "
        "a.webhook_secret_enc IS NOT NULL AS webhook_subscribed, "
        "h.checked_at AS webhook_checked_at, h.found AS webhook_found, h.error AS webhook_error, "
        "h.resubscribed_at AS webhook_resubscribed_at, "
        "h.resubscribe_reason AS webhook_resubscribe_reason, "
        "h.resubscribes AS webhook_resubscribes, h.gap_run_id AS webhook_gap_run_id "
        "FROM accounts a LEFT JOIN oauth_tokens t ON t.account_id = a.id "
        "LEFT JOIN unisender_settings u ON u.account_id = a.id "
        "LEFT JOIN webhook_health h ON h.account_id = a.id ORDER BY a.name"
    )


def webhook_health_text(a: Row) -> str:
    """One account's webhook health in words (shared/webhook_health.py keeps the row)."""
    if not a["webhook_subscribed"]:
        return "not subscribed"
    if a["webhook_checked_at"] is None:
        parts = ["not checked yet"]
    elif a["webhook_found"] == "error":
        parts = [f"check failed {a['webhook_checked_at']:%Y-%m-%d %H:%M}: {a['webhook_error']}"]
    else:
        parts = [f"{a['webhook_found']} at check {a['webhook_checked_at']:%Y-%m-%d %H:%M}"]
    if a["webhook_resubscribed_at"] is not None:
        gap = f", gap reconcile run {a['webhook_gap_run_id']}" if a["webhook_gap_run_id"] else ""
        parts.append(
            f"re-subscribed {a['webhook_resubscribed_at']:%Y-%m-%d %H:%M} "
            f"({a['webhook_resubscribes']}x; last: {a['webhook_resubscribe_reason']}{gap})"
        )
    return "; ".join(parts)


def recent_runs(db: Database, *, limit: int = 20, account_id: int | None = None) -> list[Row]:
    """The newest sync runs (all accounts, or one)."""
    where, params = "", [limit]
    if account_id is not None:
        where, params = "WHERE r.account_id = %s ", [account_id, limit]
    return db.fetch_all(
        "SELECT r.*, a.name AS account_name FROM sync_runs r "  # noqa: S608 - constant SQL
        f"JOIN accounts a ON a.id = r.account_id {where}ORDER BY r.id DESC LIMIT %s",
        params,
    )


def queue_figures() -> dict[str, dict[str, Any]]:
    """Ready / reserved / delayed / buried jobs and consumers per tube."""
    queue = get_queue()
    out: dict[str, dict[str, Any]] = {}
    for tube in JOB_TYPES:
        stats = queue.tube_stats(tube)
        out[tube] = {key: int(stats.get(key, 0)) for key in QUEUE_KEYS}
    return out


def events_per_minute(db: Database, *, minutes: int = CHART_MINUTES) -> list[tuple[datetime, int]]:
    """Contact events applied per minute over the last `minutes`, zeros included."""
    end = utcnow().replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    rows = db.fetch_all(
        "SELECT minute, SUM(events) AS n FROM event_minutes WHERE minute >= %s "
        "GROUP BY minute ORDER BY minute",
        (start,),
    )
    counts = {r["minute"]: int(r["n"]) for r in rows}
    return [
        (start + timedelta(minutes=i), counts.get(start + timedelta(minutes=i), 0))
        for i in range(minutes)
    ]


def collect_status(db: Database, *, runs: int = 20, errors: int = 20) -> StatusSnapshot:
    """One snapshot; a queue that cannot be reached is reported, not fatal."""
    snapshot = StatusSnapshot(taken_at=utcnow())
    snapshot.accounts = account_rows(db)
    snapshot.runs = recent_runs(db, limit=runs)
    try:
        snapshot.queues = queue_figures()
    except QueueUnavailable as exc:
        snapshot.queue_error = str(exc)
    snapshot.parked = db.fetch_all(
        "SELECT tube, job_id, account_id, reason, buried_at FROM parked_jobs "
        "ORDER BY buried_at DESC LIMIT %s",
        (errors,),
    )
    snapshot.import_errors = db.fetch_all(
        "SELECT m.account_id, a.name AS account_name, m.email, m.error_code, m.error_message, "
        "m.updated_at FROM list_members m JOIN accounts a ON a.id = m.account_id "
        "WHERE m.state = 'failed' ORDER BY m.updated_at DESC LIMIT %s",
        (errors,),
    )
    snapshot.events_per_minute = events_per_minute(db)
    snapshot.workers = WorkerRegistry(db).list()
    snapshot.blocks = [
        {
            "hold": h.key,
            "account_id": h.account_id,
            "since": h.started_at,
            "probes": h.probes,
            "next_probe_seconds": max(0, round(h.wait)),
            "tell_support": support_note(h),
        }
        for h in list_holds(db)
    ]
    snapshot.shared_lists = shared_lists(db)
    return snapshot


# --- HTML ---------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return escape(value.strftime("%Y-%m-%d %H:%M:%S"))
    return escape(str(value), quote=True)


def _table(
    table_id: str, headers: list[str], rows: list[list[Any]], empty: str, *, numeric: set[int]
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{_e(empty)}</td></tr>'
    else:
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="num">{_e(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>"
                for i, v in enumerate(row)
            )
            + "</tr>"
            for row in rows
        )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _expiry(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "no token"
    left = value - now
    if left.total_seconds() <= 0:
        return f"{value:%Y-%m-%d %H:%M} (expired)"
    hours = int(left.total_seconds() // 3600)
    return f"{value:%Y-%m-%d %H:%M} (in {hours // 24}d {hours % 24}h)"


def events_chart(points: list[tuple[datetime, int]], *, width: int = 600, height: int = 120) -> str:
    """An inline SVG bar chart of events per minute."""
    peak = max((n for _, n in points), default=0)
    bar = width / max(1, len(points))
    bars = []
    for i, (minute, n) in enumerate(points):
        h = 0.0 if peak == 0 else (height - 20) * n / peak
        bars.append(
            f'<rect x="{i * bar:.1f}" y="{height - 15 - h:.1f}" width="{max(1.0, bar - 1):.1f}" '
            f'height="{h:.1f}"><title>{_e(f"{minute:%H:%M}")} UTC: {n}</title></rect>'
        )
    first = _e(f"{points[0][0]:%H:%M}") if points else ""
    last = _e(f"{points[-1][0]:%H:%M}") if points else ""
    total = sum(n for _, n in points)
    return (
        f'<svg id="events-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>contact events per minute, last {len(points)} minutes: {total} in total, "
        f"peak {peak}</title>"
        f'<g fill="#3b82f6">{"".join(bars)}</g>'
        f'<text x="0" y="{height - 2}" font-size="10">{first}</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{last}</text>'
        f'<text x="{width}" y="10" font-size="10" text-anchor="end">peak {peak}/min</text>'
        "</svg>"
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#111}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{text-align:right}
td.empty{color:#888;font-style:italic}.muted{color:#666}.bad{color:#b91c1c}
"""


def render_status_page(s: StatusSnapshot) -> str:
    """The status page as one HTML document."""
    now = s.taken_at
    accounts = _table(
        "accounts",
        [
            "account",
            "id",
            "host",
            "status",
            "token expires (UTC)",
            "list",
            "members",
            "failed",
            "webhook (UTC)",
        ],
        [
            [
                a["name"],
                a["id"],
                a["host"],
                a["status"]
                + (f": {a['status_reason']}" if a["status_reason"] else "")
                + (
                    f"; reconciles paused until {a['paused_until']:%Y-%m-%d %H:%M}: "
                    f"{a['paused_reason']}"
                    if a["paused_until"]
                    else ""
                ),
                _expiry(a["token_expires_at"], now),
                f"{a['list_title']} (#{a['list_id']})" if a["list_id"] else "not connected",
                a["members"],
                a["failed"],
                webhook_health_text(a),
            ]
            for a in s.accounts
        ],
        "no accounts installed yet",
        numeric={1, 6, 7},
    )
    runs = _table(
        "runs",
        [
            "run",
            "account",
            "kind",
            "status",
            "by",
            "pages",
            "contacts",
            "imported",
            "excluded",
            "row errors",
            "import calls",
            "created (UTC)",
            "finished (UTC)",
            "error",
        ],
        [
            [
                r["id"],
                r["account_name"],
                r["kind"],
                r["status"],
                r["requested_by"],
                r["pages_read"],
                r["contacts_seen"],
                r["rows_imported"],
                r["emails_excluded"],
                r["row_errors"],
                r["import_calls"],
                r["created_at"],
                r["finished_at"],
                r["error"],
            ]
            for r in s.runs
        ],
        "no sync runs yet",
        numeric={0, 5, 6, 7, 8, 9, 10},
    )
    if s.queue_error is not None:
        queues = f'<p class="bad" id="queues">queue unavailable: {_e(s.queue_error)}</p>'
    else:
        queues = _table(
            "queues",
            ["tube", "ready", "reserved", "delayed", "buried", "consumers", "total jobs"],
            [[tube, *(q[k] for k in QUEUE_KEYS)] for tube, q in s.queues.items()],
            "no tubes",
            numeric={1, 2, 3, 4, 5, 6},
        )
    parked = _table(
        "parked",
        ["tube", "job", "account", "buried (UTC)", "reason"],
        [[p["tube"], p["job_id"], p["account_id"], p["buried_at"], p["reason"]] for p in s.parked],
        "no buried jobs",
        numeric={1, 2},
    )
    errors = _table(
        "import-errors",
        ["account", "email", "code", "message", "when (UTC)"],
        [
            [r["account_name"], r["email"], r["error_code"], r["error_message"], r["updated_at"]]
            for r in s.import_errors
        ],
        "no per-address import errors",
        numeric=set(),
    )
    blocks = (
        "".join(
            f'<p class="bad">amoCRM blocks <b>{_e(b["hold"])}</b> (403; {b["probes"]} probe(s), '
            f"next in {b['next_probe_seconds']} s): {_e(b['tell_support'])}</p>"
            for b in s.blocks
        )
        if s.blocks
        else '<p class="muted">none: amoCRM answers normally</p>'
    )
    workers = _table(
        "workers",
        ["type", "name", "host/pid", "last heartbeat (UTC)", "jobs done", "state"],
        [
            [
                w["type"],
                w["name"],
                f"{w['host'] or '-'}/{w['pid'] or '-'}",
                w["last_heartbeat_at"],
                w["jobs_done"],
                w["state"],
            ]
            for w in s.workers
        ],
        "no workers registered",
        numeric={4},
    )
    shared = _table(
        "shared-lists",
        ["account", "id", "Unisender list", "bound to", "what to do"],
        [
            [
                x.account_name,
                x.account_id,
                f"{x.list_title or '-'} (#{x.list_id})",
                f"{x.holder_name} ({x.holder_id})" if x.holder_id else "nobody",
                f"amosync lists split {x.account_name}",
            ]
            for x in s.shared_lists
        ],
        "no Unisender list is shared by two accounts",
        numeric={1},
    )
    if s.shared_lists:
        shared = (
            '<p class="bad">These accounts write into a list that belongs to another account: '
            "their full syncs are refused until they are split.</p>" + shared
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>amosync status</title><style>{_STYLE}</style></head><body>"
        f'<h1>amosync status</h1><p class="muted">as of {_e(now)} UTC</p>'
        f'<h2 id="blocks">amoCRM blocks</h2>{blocks}'
        f"<h2>Accounts</h2>{accounts}"
        f"<h2>Shared Unisender lists</h2>{shared}"
        f"<h2>Recent sync runs</h2>{runs}"
        f"<h2>Queues</h2>{queues}"
        f"<h2>Buried jobs</h2>{parked}"
        f"<h2>Recent import errors</h2>{errors}"
        f"<h2>Contact events per minute</h2>{events_chart(s.events_per_minute)}"
        f"<h2>Workers</h2>{workers}"
        "</body></html>"
    )
