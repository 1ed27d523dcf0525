"""`amosync capacity`: what the reconcile planner needs per egress IP for N accounts."""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.console import Console
from rich.table import Table

from shared.planner import PlannerConfig, capacity_table
from shared.settings import get_settings

console = Console()

DEFAULT_SIZES = "100,1000,10000,100000"


def _duration(value: timedelta) -> str:
    minutes = value.total_seconds() / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} d"


def capacity(
    accounts: str = typer.Option(DEFAULT_SIZES, help="comma-separated account counts to plan for"),
) -> None:
    """Plan reconciles for synthetic accounts (log-normal sizes, median ~2,000 contacts).

    Uses this deployment's settings (AMOCRM_IP_RATE_LIMIT_RPS, RECONCILE_BUDGET_SHARE,
    RECONCILE_INTERVAL_MINUTES, RECONCILE_HEALTHY_INTERVAL_MINUTES, FULL_RECONCILE_EVERY_HOURS).
    """
    try:
        sizes = [int(part) for part in accounts.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("give whole numbers, e.g. 100,1000") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("give at least one positive account count")
    config = PlannerConfig.from_settings(get_settings())
    table = Table(
        "accounts",
        "contacts",
        "requests/day needed",
        "egress IPs",
        "planned/day on one IP",
        "worst poll on one IP",
        "full every (one IP)",
        title=f"Reconcile plan: {config.budget_share:.0%} of {config.ip_requests_per_second:g} "
        f"req/s per IP = {config.budget_per_day:,.0f} requests/day",
    )
    for row in capacity_table(sizes, config):
        table.add_row(
            f"{row.accounts:,}",
            f"{row.contacts:,}",
            f"{row.demand_per_day:,.0f}",
            str(row.egress_ips_needed),
            f"{row.planned_per_day_one_ip:,.0f}",
            _duration(row.worst_poll_one_ip),
            _duration(row.full_period_one_ip),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity)
