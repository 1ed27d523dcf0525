"""Unisender list commands: `lists shared` (accounts sharing a list) and `lists split <name>`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.list_binding import SharedList

console = Console()
err = Console(stderr=True)

lists_app = typer.Typer(help="Unisender lists: one list per account.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lists_app, name="lists")


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def shared_lists_table(rows: Sequence[SharedList]) -> Table:
    table = Table("account", "id", "list", "bound to", "split with")
    for x in rows:
        table.add_row(
            x.account_name,
            str(x.account_id),
            f"{x.list_title or '-'} (#{x.list_id})",
            f"{x.holder_name} ({x.holder_id})" if x.holder_id else "nobody",
            f"amosync lists split {x.account_name}",
        )
    return table


@lists_app.command("shared")
def lists_shared(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
) -> None:
    """Accounts whose Unisender list belongs to another account; exit 1 if there are any."""
    from shared.db import DatabaseUnavailable, get_database
    from shared.list_binding import shared_lists

    try:
        rows = shared_lists(get_database())
    except DatabaseUnavailable as exc:
        _fail(str(exc))
        return
    if as_json:
        print(json.dumps([x.as_dict() for x in rows]))
    elif rows:
        console.print(shared_lists_table(rows))
    else:
        console.print("no Unisender list is shared by two accounts")
    if rows:
        raise typer.Exit(1)


@lists_app.command("split")
def lists_split(
    name: Annotated[str, typer.Argument(help="Local name of the account that must move out.")],
) -> None:
    """Give the account a fresh Unisender list of its own and full-sync it (and the holder).

    The shared list stays with the account it is bound to (the one that connected first); the
    holder's next full sync puts back what the other account's deletes had removed.
    """
    from shared.accounts import get_account_by_name
    from shared.db import DatabaseUnavailable, get_database
    from shared.errors import AppError
    from shared.jobqueue import QueueUnavailable
    from shared.unisender.errors import UnisenderError
    from shared.widget_connect import split_shared_list

    try:
        db = get_database()
        account = get_account_by_name(db, name)
        if account is None:
            _fail(f"no account named {name!r} (see `amosync accounts list`)", 3)
            return
        result = split_shared_list(db, account)
    except AppError as exc:
        _fail(exc.message)
        return
    except (DatabaseUnavailable, QueueUnavailable, UnisenderError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
        return
    console.print(
        f"{name}: now list {result['list_title']!r} (#{result['list_id']}), was "
        f"#{result['old_list_id']}; full sync run {result['sync']['run_id']} queued"
    )
    holder = result["holder"]
    if holder:
        console.print(
            f"holder {holder['name']} ({holder['account_id']}) keeps #{result['old_list_id']}; "
            f"full sync run {holder['sync']['run_id']} queued to repair it"
        )
