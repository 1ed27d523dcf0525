"""Sync commands: `sync <name>` (with a progress bar), `contacts <name>`, `status`."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.exits import fail as _fail
from cli.exits import infrastructure_line
from shared.logs import configure_logging
from shared.settings import get_settings

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)
    app.command("contacts")(contacts)
    app.command("status")(status)


def _account(name: str) -> Any:
    from shared.accounts import get_account_by_name
    from shared.db import get_database

    account = get_account_by_name(get_database(), name)
    if account is None:
        _fail(f"no account named {name!r} (see `amosync accounts list`)", 2)
    return account


def sync(
    name: Annotated[str, typer.Argument(help="The account's local name.")],
    incremental: Annotated[
        bool, typer.Option(help="Only contacts updated since the last finished run.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the run until it finishes.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final run as JSON.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between progress reads.")] = 0.5,
) -> None:
    """Start a full sync of an account (or join the one running) and follow it to the end."""
    from shared.db import get_database
    from shared.jobqueue import QueueUnavailable
    from shared.sync_runs import get_sync_run, request_sync, run_as_dict

    configure_logging("cli", "WARNING")
    db = get_database()
    account = _account(name)
    try:
        started = request_sync(
            db, account.id, kind="incremental" if incremental else "full", requested_by="cli"
        )
    except QueueUnavailable as exc:
        _fail(infrastructure_line(exc))
        return
    verb = "started" if started.created else "joined the active"
    if not as_json:
        console.print(f"{verb} sync run #{started.run_id} of {account.name} ({account.id})")
    run = get_sync_run(db, started.run_id)
    try:
        if wait and not as_json:
            run = _follow(started.run_id, poll)
        elif wait:
            while run is not None and run["status"] in ("queued", "running"):
                time.sleep(poll)
                run = get_sync_run(db, started.run_id)
    except KeyboardInterrupt:
        # Ctrl-C stops the watching, not the run: the consumer owns it.
        err.print(
            f"stopped following run #{started.run_id}; it goes on in the background "
            f"(`amosync sync {name}` follows it again)",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(130) from None
    if run is None:
        _fail(f"run #{started.run_id} disappeared")
        return
    shown = run_as_dict(run)
    if as_json:
        print(json.dumps(shown))
    else:
        _print_run(shown)
    if wait and shown["status"] != "done":
        raise typer.Exit(1)


def _follow(run_id: int, poll: float) -> Any:
    from shared.db import get_database
    from shared.sync_runs import get_sync_run

    db = get_database()
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[status]}[/bold]"),
        BarColumn(),
        TextColumn(
            "pages {task.fields[pages]} · contacts {task.completed:.0f} · imported "
            "{task.fields[imported]} · excluded {task.fields[excluded]} · errors "
            "{task.fields[errors]}"
        ),
        TimeElapsedColumn(),
    )
    run = get_sync_run(db, run_id)
    with Progress(*columns, console=console, transient=False) as progress:
        # amoCRM gives no total count, so the bar pulses until the run ends.
        task = progress.add_task(
            "sync", total=None, status="queued", pages=0, imported=0, excluded=0, errors=0
        )
        while run is not None:
            progress.update(
                task,
                completed=run["contacts_seen"],
                status=run["status"],
                pages=run["pages_read"],
                imported=run["rows_imported"],
                excluded=run["emails_excluded"],
                errors=run["row_errors"],
            )
            if run["status"] not in ("queued", "running"):
                progress.update(task, total=max(1, run["contacts_seen"]))
                break
            time.sleep(poll)
            run = get_sync_run(db, run_id)
    return run


def _print_run(run: dict[str, Any]) -> None:
    table = Table("run", "status", "pages", "contacts", "imported", "excluded", "errors", "error")
    table.add_row(
        str(run["run_id"]),
        run["status"],
        str(run["pages_read"]),
        str(run["contacts_seen"]),
        str(run["rows_imported"]),
        str(run["emails_excluded"]),
        str(run["row_errors"]),
        run["error"] or "",
    )
    console.print(table)


def contacts(
    name: Annotated[str, typer.Argument(help="The account's local name.")],
    cursor: Annotated[int, typer.Option(min=1, help="amoCRM page to start from.")] = 1,
    max_pages: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many pages (default: all).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=250, help="Contacts per page.")] = 250,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per contact.")] = False,
) -> None:
    """Every amoCRM contact of an account with its emails, phones and sync state, page by page."""
    from shared.amocrm.errors import AmoCrmError
    from shared.db import get_database
    from shared.lookup import contacts_page
    from shared.tokens import amocrm_client_for

    configure_logging("cli", get_settings().log_level if as_json else "WARNING")
    db = get_database()
    account = _account(name)
    amo = amocrm_client_for(account, db=db)
    page, pages, total = cursor, 0, 0
    while True:
        try:
            # contacts_page records a 401 on the account (reauth_required); a 403 is a hold.
            body = contacts_page(db, amo, account, page=page, limit=limit)
        except AmoCrmError as exc:
            _fail(f"amoCRM refused page {page}: {type(exc).__name__}: {exc}")
            return
        pages += 1
        total += body["count"]
        if as_json:
            for item in body["contacts"]:
                print(json.dumps(item, ensure_ascii=False))
        elif body["contacts"]:
            table = Table("id", "name", "emails (synced ✓)", "phones", "sync", title=f"page {page}")
            for item in body["contacts"]:
                emails = ", ".join(
                    f"{e['value']}{' ✓' if e['syncs'] else ''}" for e in item["emails"]
                )
                states = ", ".join(f"{e['email']}={e['state']}" for e in item["sync"]["emails"])
                table.add_row(
                    str(item["id"]),
                    item["name"],
                    emails,
                    ", ".join(str(p["value"]) for p in item["phones"]),
                    states or ("known" if item["sync"]["known"] else "not synced"),
                )
            console.print(table)
        if body["next_cursor"] is None or (max_pages is not None and pages >= max_pages):
            break
        page = body["next_cursor"]
    if not as_json:
        console.print(f"{total} contact(s) on {pages} page(s)")


def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Accounts, recent sync runs, queues, buried jobs and import errors (the status page)."""
    from shared.db import get_database
    from shared.status import collect_status, webhook_health_text

    snapshot = collect_status(get_database())
    if as_json:
        print(
            json.dumps(
                {
                    "taken_at": snapshot.taken_at,
                    "accounts": snapshot.accounts,
                    "runs": snapshot.runs,
                    "queues": snapshot.queues,
                    "queue_error": snapshot.queue_error,
                    "parked": snapshot.parked,
                    "import_errors": snapshot.import_errors,
                    "events_last_hour": sum(n for _, n in snapshot.events_per_minute),
                    "amocrm_blocks": snapshot.blocks,
                    "shared_lists": [x.as_dict() for x in snapshot.shared_lists],
                },
                default=str,
            )
        )
        return
    for b in snapshot.blocks:  # the operator alert: amoCRM answers 403, traffic is held
        console.print(f"[red]amoCRM blocks {b['hold']}[/red]: {b['tell_support']}")
    accounts = Table(
        "account", "id", "status", "token expires (UTC)", "list", "members", "failed", "webhook"
    )
    for a in snapshot.accounts:
        accounts.add_row(
            a["name"],
            str(a["id"]),
            a["status"],
            str(a["token_expires_at"] or "-"),
            f"{a['list_title']} (#{a['list_id']})" if a["list_id"] else "not connected",
            str(a["members"]),
            str(a["failed"]),
            webhook_health_text(a),
        )
    console.print(accounts)
    if snapshot.shared_lists:
        from cli.lists import shared_lists_table

        err.print("[red]accounts sharing another account's Unisender list:[/red]")
        console.print(shared_lists_table(snapshot.shared_lists))
    runs = Table(
        "run", "account", "kind", "status", "pages", "contacts", "imported", "excluded", "error"
    )
    for r in snapshot.runs:
        runs.add_row(
            str(r["id"]),
            r["account_name"],
            r["kind"],
            r["status"],
            str(r["pages_read"]),
            str(r["contacts_seen"]),
            str(r["rows_imported"]),
            str(r["emails_excluded"]),
            (r["error"] or "")[:80],
        )
    console.print(runs)
    if snapshot.queue_error:
        err.print(f"[red]queue unavailable:[/red] {snapshot.queue_error}")
    else:
        queues = Table("tube", "ready", "reserved", "delayed", "buried", "consumers", "total")
        for tube, q in snapshot.queues.items():
            queues.add_row(tube, *(str(v) for v in q.values()))
        console.print(queues)
    if snapshot.parked:
        parked = Table("tube", "job", "account", "buried at", "reason")
        for p in snapshot.parked:
            parked.add_row(
                p["tube"],
                str(p["job_id"]),
                str(p["account_id"] or "-"),
                str(p["buried_at"]),
                p["reason"][:100],
            )
        console.print(parked)
    if snapshot.import_errors:
        errors = Table("account", "email", "code", "message")
        for e in snapshot.import_errors:
            errors.add_row(
                e["account_name"], e["email"], e["error_code"] or "", e["error_message"] or ""
            )
        console.print(errors)
    total = sum(n for _, n in snapshot.events_per_minute)
    console.print(f"contact events in the last hour: {total}")
