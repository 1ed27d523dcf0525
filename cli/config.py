"""`amosync config`: the effective settings (secrets masked) and what does not fit together."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("config")(show_config)


def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Effective settings, secrets masked, each with its source; warns about inconsistencies.

    Exit 0 when nothing looks wrong, 1 with warnings (or invalid settings)."""
    from dotenv import dotenv_values

    from cli.ops import load_settings
    from devstack.run import dotenv_environment
    from shared.config_report import effective, warnings

    settings = load_settings()
    dotenv = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    entries = effective(settings, os.environ, dotenv)
    problems = warnings(settings, dotenv_environment())
    if as_json:
        print(
            json.dumps(
                {
                    "settings": {e.name: {"value": e.value, "source": e.source} for e in entries},
                    "warnings": problems,
                }
            )
        )
    else:
        table = Table("setting", "value", "source", title="amosync effective settings")
        table.columns[1].overflow = "fold"  # a URL cut at 80 columns is a wrong URL
        for e in entries:
            table.add_row(e.name, escape(e.value), e.source)
        console.print(table)
        for line in problems:
            err.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    raise typer.Exit(1 if problems else 0)
