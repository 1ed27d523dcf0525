"""Installed amoCRM accounts: the rows, their lookup by id or local name, and their status."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from shared import failures
from shared.clock import iso_utc, utcnow
from shared.db import Database, Row
from shared.errors import BadRequest, NotFound
from shared.failures import Failure

log = logging.getLogger(__name__)

# No `blocked`: a 403 is a block of our IP or the account that heals by itself (shared.blocks).
AccountStatus = Literal["active", "reauth_required", "disabled"]
STATUSES: tuple[str, ...] = get_args(AccountStatus)

# Interpolated into SQL below: a constant, never input (hence the S608 waivers).
_COLUMNS = (
    "id, name, host, amo_name, status, status_reason, paused_until, paused_reason, email_types, "
    "created_at, updated_at"
)

# How long scheduled reconciles leave an account alone after amoCRM answered 402 (unpaid). A
# reconcile runs every 15 minutes: without the pause that is ~100 failing requests a day for
# as long as the bill is open; with it, four, and sync resumes within hours of the payment.
UNPAID_PAUSE = timedelta(hours=6)


class AccountRow(BaseModel):
    """One installed amoCRM account; `id` is the amoCRM account id."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    host: str
    amo_name: str = ""
    status: AccountStatus = "active"
    status_reason: str | None = None
    # Scheduled reconciles skip the account until then (naive UTC); see `record_amocrm_failure`.
    paused_until: datetime | None = None
    paused_reason: str | None = None
    # None = every email type syncs; otherwise only these enum codes (WORK, PRIV, OTHER).
    email_types: frozenset[str] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    def is_paused(self, now: datetime | None = None) -> bool:
        """True while scheduled reconciles leave this account alone (`paused_until` ahead)."""
        return self.paused_until is not None and self.paused_until > (now or utcnow())

    @classmethod
    def from_row(cls, row: Row) -> AccountRow:
        raw_types = row.get("email_types")
        types = (
            frozenset(t.strip().upper() for t in raw_types.split(",") if t.strip())
            if raw_types
            else None
        )
        return cls(
            id=int(row["id"]),
            name=row["name"],
            host=row["host"],
            amo_name=row.get("amo_name") or "",
            status=row["status"],
            status_reason=row.get("status_reason"),
            paused_until=row.get("paused_until"),
            paused_reason=row.get("paused_reason"),
            email_types=types or None,
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
        )


class AccountOverview(BaseModel):
    """An account with its token state, as the CLI and status page show it."""

    account: AccountRow
    token_expires_at: datetime | None
    token_refreshed_at: datetime | None
    token_generation: int | None

    def as_dict(self) -> dict[str, Any]:
        a = self.account
        return {
            "name": a.name,
            "id": a.id,
            "host": a.host,
            "amo_name": a.amo_name,
            "status": a.status,
            "status_reason": a.status_reason,
            "paused_until": iso_utc(a.paused_until) if a.is_paused() else None,
            "paused_reason": a.paused_reason if a.is_paused() else None,
            "token_expires_at": iso_utc(self.token_expires_at),
            "token_refreshed_at": iso_utc(self.token_refreshed_at),
            "token_generation": self.token_generation,
        }


def get_account(db: Database, account_id: int) -> AccountRow | None:
    """The account with this amoCRM id, or None."""
    sql = f"SELECT {_COLUMNS} FROM accounts WHERE id = %s"  # noqa: S608
    row = db.fetch_one(sql, (account_id,))
    return AccountRow.from_row(row) if row else None


def get_account_by_name(db: Database, name: str) -> AccountRow | None:
    """The account installed under this local name, or None."""
    sql = f"SELECT {_COLUMNS} FROM accounts WHERE name = %s"  # noqa: S608
    row = db.fetch_one(sql, (name,))
    return AccountRow.from_row(row) if row else None


def find_account(
    db: Database, *, name: str | None = None, account_id: int | None = None
) -> AccountRow:
    """The account by local name or id; raises NotFound (404) when there is none."""
    if (name is None) == (account_id is None):
        raise BadRequest("give exactly one of name or account_id", code="missing_parameter")
    account = get_account(db, account_id) if account_id is not None else None
    if name is not None:
        account = get_account_by_name(db, name)
    if account is None:
        what = f"name {name!r}" if name is not None else f"id {account_id}"
        raise NotFound(f"no account with {what}", code="account_not_found")
    return account


def list_accounts(db: Database) -> list[AccountRow]:
    """Every installed account, by name."""
    rows = db.fetch_all(f"SELECT {_COLUMNS} FROM accounts ORDER BY name")  # noqa: S608
    return [AccountRow.from_row(r) for r in rows]


def list_account_overviews(db: Database) -> list[AccountOverview]:
    """Every account with its token expiry (no token values are read)."""
    cols = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
    rows = db.fetch_all(
        f"SELECT {cols}, t.expires_at AS token_expires_at, "  # noqa: S608
        "t.refreshed_at AS token_refreshed_at, "
        "t.generation AS token_generation "
        "FROM accounts a LEFT JOIN oauth_tokens t ON t.account_id = a.id ORDER BY a.name"
    )
    return [
        AccountOverview(
            account=AccountRow.from_row(r),
            token_expires_at=r["token_expires_at"],
            token_refreshed_at=r["token_refreshed_at"],
            token_generation=r["token_generation"],
        )
        for r in rows
    ]


def mark_account_status(
    db: Database,
    account_id: int,
    status: AccountStatus,
    reason: str | None,
    *,
    only_if: tuple[AccountStatus, ...] | None = None,
) -> bool:
    """Set one account's status (optionally only from the given ones); True if it changed."""
    if status not in STATUSES:
        raise ValueError(f"unknown account status {status!r}")
    sql = "UPDATE accounts SET status = %s, status_reason = %s WHERE id = %s"
    params: list[Any] = [status, (reason or None) and reason[:500], account_id]
    if only_if:
        sql += f" AND status IN ({', '.join(['%s'] * len(only_if))})"
        params.extend(only_if)
    changed = db.execute(sql, params) > 0
    if changed:
        log.warning(
            "account status changed",
            extra={"account_id": account_id, "status": status, "reason": (reason or "")[:200]},
        )
    return changed


def record_amocrm_failure(db: Database, account_id: int, exc: BaseException) -> bool:
    """Apply what the failure means for the account; True if it stops the account.

    The failure says it (`shared.failures`): `stops_account` errors (a 401 that survived a
    refresh, a rejected grant) set that status. They do not heal by retrying (reference §1.5),
    and reconciles, refreshes and sync runs skip accounts that are not active, so this is what
    ends the loop. A new OAuth install sets the account active again.

    `pauses_reconciles` errors (402, account unpaid) keep the status: paying restores access with
    nothing for anyone to do here. Scheduled reconciles pause for `UNPAID_PAUSE` instead
    (`pause_reconciles`) and this returns False. Anything else changes nothing.
    """
    decision = failures.decide(exc)
    if decision.pauses_reconciles:
        pause_reconciles(db, account_id, decision.reason[:255])
        return False
    status = decision.stops_account
    if status is None:
        return False
    reason = decision.reason
    # Never over `disabled`: the owner uninstalled us, a stale refusal changes nothing.
    if mark_account_status(db, account_id, status, reason, only_if=("active",)):
        # The alert operators watch for: one line when the account stops, none on repeats.
        log.error(
            "amoCRM refused the account; it is stopped until re-authorized",
            extra={
                "event": f"account_{status}",
                "account_id": account_id,
                "status": status,
                "reason": reason[:300],
                "amocrm_status": getattr(exc, "status", None),
                "amocrm_request_id": getattr(exc, "request_id", None),
            },
        )
    return True


@contextmanager
def amocrm_failures_recorded(db: Database, account_id: int) -> Iterator[None]:
    """Pass vendor errors raised inside through `record_amocrm_failure`, then re-raise them."""
    try:
        yield
    except Failure as exc:
        record_amocrm_failure(db, account_id, exc)
        raise


def pause_reconciles(
    db: Database, account_id: int, reason: str, *, pause: timedelta = UNPAID_PAUSE
) -> bool:
    """Keep scheduled reconciles away from the account for `pause`; True if it was not paused.

    A pause already running is left as it is (a manual sync meeting the same 402 does not
    extend it), so the warning is logged once per pause.
    """
    now = utcnow()
    started = (
        db.execute(
            "UPDATE accounts SET paused_until = %s, paused_reason = %s "
            "WHERE id = %s AND (paused_until IS NULL OR paused_until <= %s)",
            (now + pause, reason[:255], account_id, now),
        )
        > 0
    )
    if started:
        log.warning(
            "scheduled reconciles of the account paused",
            extra={
                "event": "account_reconciles_paused",
                "account_id": account_id,
                "paused_until": iso_utc(now + pause),
                "reason": reason[:200],
            },
        )
    return started


def reconcile_allowed_sql(alias: str = "a") -> str:
    """SQL condition true for accounts whose scheduled reconciles are not paused (a constant)."""
    return f"({alias}.paused_until IS NULL OR {alias}.paused_until <= UTC_TIMESTAMP(6))"
