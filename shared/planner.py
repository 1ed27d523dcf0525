"""The request budget planner: when each account is reconciled, within the egress IP's budget.

amoCRM allows one egress IP about 7 requests/s (see shared/ratelimit.py), ~604,800 a day, for
everything: webhook follow-ups, widget calls, first syncs and the scheduler's reconciles. Polling
every account every 15 minutes and fully re-reading all of them at one hour would take more than
that at 10,000 accounts. So the planner:

- spreads full reconciles over the day: each account has its own daily slot (a hash of its id),
  so the load is flat instead of a 03:00 spike;
- polls adaptively: accounts whose webhooks are healthy (events arrived recently, or the last
  subscription check found the hook enabled; see `_reconcilable_accounts` in shared/sync_runs.py)
  are polled rarely, accounts whose webhooks look lost every RECONCILE_INTERVAL_MINUTES;
- reads each account's webhook subscription once per healthy poll interval
  (shared/webhook_health.py): one request, counted in the demand like the polls;
- keeps the planned daily requests under RECONCILE_BUDGET_SHARE of the IP budget, stretching every
  interval by the same factor when the accounts need more, and says how many egress IPs would
  keep the intervals unstretched.

Everything here is pure arithmetic over `AccountLoad`s, so `amosync capacity` can plan for
accounts that do not exist; shared/sync_runs.py feeds it the real ones.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.settings import Settings

# amoCRM returns at most 250 contacts per page.
CONTACTS_PER_PAGE = 250
# A poll asks "what changed since the watermark": one page when webhooks already delivered the
# changes; more only for the accounts whose changes were missed, which the next full covers.
POLL_REQUESTS = 1.0
# A full reconcile reads every page plus the custom-field definitions.
FULL_EXTRA_REQUESTS = 1.0
# A webhook health check is one `GET /api/v4/webhooks` (a re-subscription, two more, is rare).
WEBHOOK_CHECK_REQUESTS = 1.0
DAY = timedelta(days=1)


@dataclass(frozen=True)
class AccountLoad:
    """What the planner needs to know about one account."""

    account_id: int
    contacts: int
    webhooks_healthy: bool


@dataclass(frozen=True)
class PlannerConfig:
    ip_requests_per_second: float
    budget_share: float
    poll_minutes: int
    healthy_poll_minutes: int
    full_every_hours: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PlannerConfig:
        return cls(
            ip_requests_per_second=settings.amocrm_ip_rate_limit_rps,
            budget_share=settings.reconcile_budget_share,
            poll_minutes=settings.reconcile_interval_minutes,
            healthy_poll_minutes=settings.reconcile_healthy_interval_minutes,
            full_every_hours=settings.full_reconcile_every_hours,
        )

    @property
    def budget_per_day(self) -> float:
        """Requests a day the reconciles of one egress IP may plan for."""
        return self.ip_requests_per_second * 86400 * self.budget_share


def full_requests(load: AccountLoad) -> float:
    return math.ceil(load.contacts / CONTACTS_PER_PAGE) + FULL_EXTRA_REQUESTS


@dataclass(frozen=True)
class Plan:
    """Reconcile intervals for a set of accounts, and what they cost per day."""

    config: PlannerConfig
    accounts: int
    # Requests a day the accounts would need at the configured intervals.
    demand_per_day: float
    # ≥ 1: every interval is multiplied by this to fit the budget (1 = fits as configured).
    stretch: float

    @property
    def planned_per_day(self) -> float:
        return self.demand_per_day / self.stretch

    @property
    def egress_ips_needed(self) -> int:
        """Egress IPs (each with its own budget) that would run the plan unstretched."""
        return max(1, math.ceil(self.demand_per_day / self.config.budget_per_day))

    def poll_interval(self, load: AccountLoad) -> timedelta:
        minutes = (
            self.config.healthy_poll_minutes if load.webhooks_healthy else self.config.poll_minutes
        )
        return timedelta(minutes=minutes * self.stretch)

    @property
    def full_period(self) -> timedelta:
        return timedelta(hours=self.config.full_every_hours * self.stretch)

    @property
    def webhook_check_interval(self) -> timedelta:
        """How often each account's webhook subscription is read (shared/webhook_health.py)."""
        return timedelta(minutes=self.config.healthy_poll_minutes * self.stretch)

    @property
    def worst_poll_interval(self) -> timedelta:
        """The longest a change can wait for a poll when its webhook was lost."""
        return timedelta(minutes=self.config.poll_minutes * self.stretch)

    def last_full_slot(self, account_id: int, now: datetime) -> datetime:
        """The latest instant ≤ now at which this account's full reconcile was due.

        Slots are `offset + k * period` since the epoch, the offset a hash of the account id: the
        accounts' fulls are spread evenly over the period and each keeps its own time of day.
        """
        period = self.full_period.total_seconds()
        offset = daily_offset(account_id) / 86400 * period
        elapsed = now.timestamp() - offset
        return datetime.fromtimestamp(offset + math.floor(elapsed / period) * period, tz=UTC)

    def full_due(self, account_id: int, last_full: datetime | None, now: datetime) -> bool:
        return last_full is None or last_full < self.last_full_slot(account_id, now)

    def poll_due(self, load: AccountLoad, last_run: datetime | None, now: datetime) -> bool:
        return last_run is None or now - last_run >= self.poll_interval(load)


def daily_offset(account_id: int) -> int:
    """Seconds into the day of the account's full reconcile: stable, spread evenly by a hash."""
    return zlib.crc32(str(account_id).encode()) % 86400


def make_plan(loads: Sequence[AccountLoad], config: PlannerConfig) -> Plan:
    polls_healthy = 1440 / config.healthy_poll_minutes
    polls_lost = 1440 / config.poll_minutes
    fulls_per_day = 24 / config.full_every_hours
    # Every account's subscription is checked once per healthy poll interval, healthy or not.
    checks = polls_healthy * WEBHOOK_CHECK_REQUESTS
    demand = 0.0
    for load in loads:
        polls = polls_healthy if load.webhooks_healthy else polls_lost
        demand += polls * POLL_REQUESTS + fulls_per_day * full_requests(load) + checks
    stretch = max(1.0, demand / config.budget_per_day)
    return Plan(config=config, accounts=len(loads), demand_per_day=demand, stretch=stretch)


def synthetic_accounts(
    count: int, *, healthy_share: float = 0.9, seed: int = 1
) -> list[AccountLoad]:
    """Accounts with a realistic spread of sizes, for capacity planning without real ones.

    Contacts per account are log-normal around ~2,000 (median) with a long tail: most amoCRM
    accounts are small companies, a few per thousand hold 100k+ contacts. Fixed seed: the same
    figures every run.
    """
    rng = random.Random(seed)
    loads = []
    for account_id in range(1, count + 1):
        contacts = min(1_000_000, int(rng.lognormvariate(math.log(2000), 1.4)))
        loads.append(AccountLoad(account_id, contacts, rng.random() < healthy_share))
    return loads


@dataclass(frozen=True)
class CapacityRow:
    accounts: int
    contacts: int
    demand_per_day: float
    egress_ips_needed: int
    planned_per_day_one_ip: float
    worst_poll_one_ip: timedelta
    full_period_one_ip: timedelta


def capacity_table(sizes: Iterable[int], config: PlannerConfig) -> list[CapacityRow]:
    """For each account count: demand, IPs needed, and what one IP would have to stretch to."""
    rows = []
    for size in sizes:
        loads = synthetic_accounts(size)
        plan = make_plan(loads, config)
        rows.append(
            CapacityRow(
                accounts=size,
                contacts=sum(load.contacts for load in loads),
                demand_per_day=plan.demand_per_day,
                egress_ips_needed=plan.egress_ips_needed,
                planned_per_day_one_ip=plan.planned_per_day,
                worst_poll_one_ip=plan.worst_poll_interval,
                full_period_one_ip=plan.full_period,
            )
        )
    return rows
