"""Account commands: `accounts list`, `accounts refresh`, `update-tokens` (the original's -t)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.exits import fail as _fail
from cli.exits import infrastructure_line
from shared.logs import configure_logging
from shared.settings import get_settings

console = Console()

accounts_app = typer.Typer(help="Installed amoCRM accounts.", no_args_is_help=True)

# One failure code for every command (typer itself uses 2 for usage errors): 0 ok, 1 failed.
EXIT_FAILED = 1


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
    app.command("update-tokens")(update_tokens)


@accounts_app.command("list")
def accounts_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Accounts with id, host, status and token expiry (never the tokens themselves)."""
    from shared.accounts import list_account_overviews
    from shared.db import DatabaseUnavailable, get_database

    try:
        rows = [o.as_dict() for o in list_account_overviews(get_database())]
    except DatabaseUnavailable as exc:
        _fail(infrastructure_line(exc))
        return
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "id", "host", "status", "token expires", "last refresh", "reason")
    for r in rows:
        table.add_row(
            r["name"],
            str(r["id"]),
            r["host"],
            r["status"],
            r["token_expires_at"] or "-",
            r["token_refreshed_at"] or "-",
            "; ".join(
                x
                for x in (
                    r["status_reason"],
                    r["paused_until"] and f"reconciles paused until {r['paused_until']}",
                    r["paused_reason"],
                )
                if x
            ),
        )
    console.print(table)


@accounts_app.command("refresh")
def accounts_refresh(
    name: Annotated[str, typer.Argument(help="Local name of the account.")],
) -> None:
    """Queue a token refresh for one account (a token-refresh worker performs it)."""
    from shared.accounts import get_account_by_name
    from shared.db import DatabaseUnavailable, get_database
    from shared.jobqueue import QueueUnavailable, get_queue
    from shared.jobs import RefreshTokenJob

    try:
        account = get_account_by_name(get_database(), name)
        if account is None:
            _fail(f"no account named {name!r} (amosync accounts list shows them)")
            return
        if not account.is_active:
            _fail(f"account {name!r} is {account.status}; re-authorize it via /auth?name={name}")
        job_id = get_queue().put(RefreshTokenJob(account_id=account.id, reason="manual"))
    except (DatabaseUnavailable, QueueUnavailable) as exc:
        _fail(infrastructure_line(exc))
        return
    console.print(f"queued refresh of {name} (account {account.id}) as job {job_id}")


def update_tokens(
    hours: Annotated[
        int,
        typer.Option(
            "--hours", "-t", min=0, help="Refresh tokens that expire within this many hours."
        ),
    ] = 24,
) -> None:
    """Queue refreshes of tokens expiring soon (the original's Sync:update-tokens -t)."""
    from shared.db import DatabaseUnavailable
    from shared.jobqueue import QueueUnavailable
    from shared.tokens import enqueue_expiring_refreshes

    configure_logging("cli", get_settings().log_level)
    try:
        count = enqueue_expiring_refreshes(hours)
    except (DatabaseUnavailable, QueueUnavailable) as exc:
        _fail(infrastructure_line(exc))
        return
    console.print(f"queued {count} token refresh job(s) (expiring within {hours}h)")
