"""amoCRM blocks (403): one hold per egress IP or per account, shared by every process.

After repeated 429s amoCRM answers 403 to every request: Kommo's docs say from our IP address,
amoCRM's say for the account, and the body may be an nginx HTML page (reference §5). A 403 is
therefore never an account status here. The first one puts a hold on our egress IP (the safe
reading: every tenant behind it is cut off); while a hold is on, amoCRM requests are refused
before they are sent (`Blocked`, retriable: jobs wait in the queue), except one cheap probe
(`GET /api/v4/account`) on a growing interval. The probe's success lifts the hold and every
account resumes by itself. When another account's probe succeeds, the block was only the first
account's: the egress hold is lifted and that account gets a hold of its own, probed the same
way. The rows live in MySQL (`amo_holds`) so every process sees the same holds; times come from
the MySQL server's clock, like the throttle's.

This is not the per-second throttle (shared/ratelimit.py): the throttle spaces requests so a
block is never earned; a hold stops them once one was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.amocrm.errors import Blocked
from shared.db import Database, Row
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

# A claimed probe holds the others back this long, so one slow probe is not sent twice.
PROBE_LEASE_SECONDS = 10


def egress_hold_key(settings: Settings) -> str:
    return f"egress:{settings.egress_id}"


def account_hold_key(account_id: int) -> str:
    return f"account:{account_id}"


@dataclass(frozen=True)
class Hold:
    """One hold as stored; `wait` is seconds until its next probe (server clock; < 0: overdue)."""

    key: str
    account_id: int | None
    reason: str
    request_id: str | None
    started_at: datetime
    next_probe_at: datetime
    probe_interval: int
    probes: int
    wait: float

    @property
    def is_egress(self) -> bool:
        return self.key.startswith("egress:")

    @classmethod
    def from_row(cls, row: Row) -> Hold:
        return cls(
            key=str(row["hold_key"]),
            account_id=int(row["account_id"]) if row["account_id"] is not None else None,
            reason=str(row["reason"]),
            request_id=row["request_id"],
            started_at=row["started_at"],
            next_probe_at=row["next_probe_at"],
            probe_interval=int(row["probe_interval_seconds"]),
            probes=int(row["probes"]),
            wait=float(row["wait"]),
        )


_SELECT = (
    "SELECT hold_key, account_id, reason, request_id, started_at, next_probe_at, "
    "probe_interval_seconds, probes, "
    "TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), next_probe_at) / 1000000 AS wait "
    "FROM amo_holds"
)


def list_holds(db: Database) -> list[Hold]:
    """Every hold in force (the status page and `amosync status` show them)."""
    return [Hold.from_row(r) for r in db.fetch_all(f"{_SELECT} ORDER BY started_at")]


def support_note(hold: Hold, settings: Settings | None = None) -> str:
    """What an operator tells amoCRM support to get the block lifted."""
    s = settings or get_settings()
    what = (
        f"requests from our egress IP (EGRESS_ID={s.egress_id})"
        if hold.is_egress
        else f"API access of account {hold.account_id}"
    )
    return (
        f"amoCRM answers 403 to {what} since {hold.started_at:%Y-%m-%d %H:%M:%S} UTC. Tell amoCRM "
        f"support: the public IP address of that egress, the account id {hold.account_id} and "
        f"its subdomain, the integration's client id, and the blocked request's X-Request-Id "
        f"{hold.request_id or '(none)'}; amosync probes every {hold.probe_interval} s and resumes "
        "by itself once the block is lifted."
    )


class BlockGuard:
    """The amoCRM client's gate for one account: refuses requests a hold covers, runs probes."""

    def __init__(self, db: Database, account_id: int, *, settings: Settings | None = None):
        self.db = db
        self.account_id = account_id
        self.settings = settings or get_settings()
        self.keys = (egress_hold_key(self.settings), account_hold_key(account_id))

    def admit(self, probe: Callable[[], None]) -> None:
        """Return if a request may be sent; raise `Blocked` if a hold covers it.

        When a hold's probe is due, this caller runs it (`probe` sends one cheap request
        that raises `Blocked` on a 403): success lifts the hold and the request goes on.
        """
        rows = self.db.fetch_all(
            f"{_SELECT} WHERE hold_key IN (%s, %s) ORDER BY hold_key DESC",
            self.keys,
        )
        for hold in (Hold.from_row(r) for r in rows):  # egress:… sorts before account:…
            if hold.wait > 0:
                raise self._refusal(hold, max(1.0, hold.wait))
            if (
                hold.is_egress
                and hold.account_id == self.account_id
                and -hold.wait < PROBE_LEASE_SECONDS
            ):
                # The account that earned the hold probes the egress last: if only it is
                # blocked, its failing probes would keep every other tenant waiting. Another
                # account's probe tells more; with nobody else around it probes after the lease.
                raise self._refusal(hold, max(1.0, PROBE_LEASE_SECONDS + hold.wait))
            if not self._claim_probe(hold):
                raise self._refusal(hold, float(PROBE_LEASE_SECONDS))
            self._run_probe(hold, probe)

    def record(self, exc: Blocked) -> None:
        """A request met a 403: hold the egress IP; `exc` learns when the next probe is due."""
        interval = self.settings.amocrm_block_probe_seconds
        created = (
            self.db.execute(
                "INSERT IGNORE INTO amo_holds (hold_key, account_id, reason, request_id, "
                "started_at, next_probe_at, probe_interval_seconds) VALUES (%s, %s, %s, %s, "
                "UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) + INTERVAL %s SECOND, %s)",
                (
                    self.keys[0],
                    self.account_id,
                    str(exc)[:500],
                    (exc.request_id or "")[:64] or None,
                    interval,
                    interval,
                ),
            )
            > 0
        )
        hold = self._hold(self.keys[0])
        exc.retry_after = max(1.0, hold.wait) if hold is not None else float(interval)
        if created and hold is not None:
            self._alert(hold)

    def _hold(self, key: str) -> Hold | None:
        row = self.db.fetch_one(f"{_SELECT} WHERE hold_key = %s", (key,))
        return Hold.from_row(row) if row is not None else None

    def _claim_probe(self, hold: Hold) -> bool:
        """Take the due probe (one process wins); the others keep waiting."""
        return (
            self.db.execute(
                "UPDATE amo_holds SET next_probe_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND, "
                "probes = probes + 1 WHERE hold_key = %s AND next_probe_at <= UTC_TIMESTAMP(6)",
                (PROBE_LEASE_SECONDS, hold.key),
            )
            > 0
        )

    def _run_probe(self, hold: Hold, probe: Callable[[], None]) -> None:
        try:
            probe()
        except Blocked as exc:
            interval = min(hold.probe_interval * 2, self.settings.amocrm_block_probe_max_seconds)
            self.db.execute(
                "UPDATE amo_holds SET probe_interval_seconds = %s, "
                "next_probe_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND WHERE hold_key = %s",
                (interval, interval, hold.key),
            )
            log.warning(
                "amoCRM block still on; next probe later",
                extra={
                    "event": "amocrm_block_probe_failed",
                    "hold": hold.key,
                    "account_id": self.account_id,
                    "probes": hold.probes + 1,
                    "next_probe_seconds": interval,
                },
            )
            raise self._refusal(hold, float(interval)) from exc
        except Exception:
            # Not an answer about the block (a timeout, a 401): probe again at the same pace.
            self.db.execute(
                "UPDATE amo_holds SET next_probe_at = UTC_TIMESTAMP(6) + INTERVAL %s SECOND "
                "WHERE hold_key = %s",
                (hold.probe_interval, hold.key),
            )
            raise
        self.db.execute("DELETE FROM amo_holds WHERE hold_key = %s", (hold.key,))
        log.warning(
            "amoCRM block lifted; traffic resumes",
            extra={
                "event": "amocrm_block_lifted",
                "hold": hold.key,
                "account_id": self.account_id,
                "probes": hold.probes + 1,
            },
        )
        blocked_account = hold.account_id
        if hold.is_egress and blocked_account is not None and blocked_account != self.account_id:
            # Another account gets through: the 403 was the first account's own. It keeps a
            # hold of its own, probed at once (its block may be gone too).
            key = account_hold_key(blocked_account)
            created = self.db.execute(
                "INSERT IGNORE INTO amo_holds (hold_key, account_id, reason, request_id, "
                "started_at, next_probe_at, probe_interval_seconds) VALUES (%s, %s, %s, %s, "
                "%s, UTC_TIMESTAMP(6), %s)",
                (
                    key,
                    blocked_account,
                    hold.reason,
                    hold.request_id,
                    hold.started_at,
                    self.settings.amocrm_block_probe_seconds,
                ),
            )
            hold_now = self._hold(key)
            if created and hold_now is not None:
                self._alert(hold_now)

    def _refusal(self, hold: Hold, wait: float) -> Blocked:
        scope = "our egress IP" if hold.is_egress else f"account {hold.account_id}"
        return Blocked(
            f"amoCRM blocks {scope} (403 since {hold.started_at:%Y-%m-%d %H:%M:%S} UTC); "
            f"not sent, next probe in {wait:.0f} s",
            retry_after=wait,
        )

    def _alert(self, hold: Hold) -> None:
        # The alert operators watch for: one line when a hold starts, not one per refused call.
        log.error(
            "amoCRM blocked our requests (403): traffic stopped, probing until it is lifted",
            extra={
                "event": "amocrm_ip_blocked" if hold.is_egress else "amocrm_account_blocked",
                "hold": hold.key,
                "account_id": hold.account_id,
                "amocrm_request_id": hold.request_id,
                "tell_support": support_note(hold, self.settings),
            },
        )
