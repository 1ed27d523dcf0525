"""`amosync`: the operator CLI (the original's console commands, modernised)."""

from __future__ import annotations

import typer

from cli import accounts, capacity, demo, lists, ops, security, sync, widget

app = typer.Typer(
    name="amosync",
    help="amosync operator commands. Every command has --help; exit code 0 = ok, 1 = failed, "
    "2 = usage error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ops.register(app)
accounts.register(app)
lists.register(app)
sync.register(app)
widget.register(app)
security.register(app)
demo.register(app)
capacity.register(app)
