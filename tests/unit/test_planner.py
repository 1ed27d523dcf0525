"""The reconcile planner: spread slots, adaptive polls, and plans that fit the IP budget."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shared.planner import (
    AccountLoad,
    PlannerConfig,
    capacity_table,
    daily_offset,
    make_plan,
    synthetic_accounts,
)

CONFIG = PlannerConfig(
    ip_requests_per_second=7.0,
    budget_share=0.5,
    poll_minutes=15,
    healthy_poll_minutes=360,
    full_every_hours=24,
)


def test_full_reconciles_are_spread_over_the_day_not_one_hour() -> None:
    hours = Counter(daily_offset(account_id) // 3600 for account_id in range(1, 24_001))
    # 1,000 per hour on average; the busiest hour holds no more than 15% above that.
    assert len(hours) == 24
    assert max(hours.values()) <= 1150 and min(hours.values()) >= 850


def test_an_accounts_slot_is_its_own_time_of_day_every_day() -> None:
    plan = make_plan([], CONFIG)
    now = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
    slot = plan.last_full_slot(42, now)
    assert now - timedelta(days=1) < slot <= now
    assert plan.last_full_slot(42, now + timedelta(days=1)) == slot + timedelta(days=1)
    assert plan.full_due(42, None, now)
    assert not plan.full_due(42, slot + timedelta(seconds=1), now)
    assert plan.full_due(42, slot - timedelta(seconds=1), now)


def test_healthy_webhooks_are_polled_rarely_lost_ones_often() -> None:
    plan = make_plan([], CONFIG)
    healthy, lost = AccountLoad(1, 100, True), AccountLoad(2, 100, False)
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert plan.poll_interval(healthy) == timedelta(hours=6)
    assert plan.poll_interval(lost) == timedelta(minutes=15)
    assert plan.poll_due(lost, now - timedelta(minutes=16), now)
    assert not plan.poll_due(healthy, now - timedelta(minutes=16), now)


def test_a_plan_within_budget_is_not_stretched() -> None:
    plan = make_plan([AccountLoad(1, 1000, False)], CONFIG)
    # 96 polls + one full of 4 pages + the field definitions + 4 webhook checks (every 6 h).
    assert plan.demand_per_day == pytest.approx(96 + 5 + 4)
    assert plan.stretch == 1.0
    assert plan.egress_ips_needed == 1
    assert plan.webhook_check_interval == timedelta(hours=6)


def test_a_plan_over_budget_stretches_every_interval_to_fit() -> None:
    loads = synthetic_accounts(20_000)
    plan = make_plan(loads, CONFIG)
    assert plan.demand_per_day > CONFIG.budget_per_day
    assert plan.planned_per_day == pytest.approx(CONFIG.budget_per_day)
    assert plan.worst_poll_interval > timedelta(minutes=15)
    assert plan.full_period > timedelta(hours=24)
    assert plan.egress_ips_needed >= 2


def test_capacity_grows_with_the_accounts() -> None:
    rows = capacity_table([100, 1000, 10_000], CONFIG)
    demands = [row.demand_per_day for row in rows]
    assert demands == sorted(demands) and demands[0] < demands[-1]
    assert rows[0].egress_ips_needed == 1
    assert rows[-1].egress_ips_needed > 1


def test_capacity_command_prints_the_plan_and_refuses_nonsense(isolated_env) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["capacity", "--accounts", "100,10000"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "302,400 requests/day" in result.output
    assert "10,000" in result.output
    bad = runner.invoke(app, ["capacity", "--accounts", "many"])
    assert bad.exit_code == 2
