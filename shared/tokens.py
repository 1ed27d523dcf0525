"""OAuth token storage and refresh: encrypted at rest, one refresh per account at a time.

amoCRM rotates the refresh token on every refresh and a spent one is dead, so a double refresh
(two processes spending the same refresh token) breaks an account. Every refresh here happens
under a per-account MySQL lock (GET_LOCK, shared by every process) and re-reads the stored pair
under that lock first: whoever comes second sees the rotated pair and does not spend anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr

from shared.accounts import AccountRow, get_account, record_amocrm_failure
from shared.amocrm.client import AmoCrmClient
from shared.amocrm.errors import OAuthRejected, OAuthTransient, Unauthorized
from shared.amocrm.models import TokenPair
from shared.amocrm.oauth import AmoCrmOAuth
from shared.blocks import BlockGuard
from shared.clock import aware_utcnow, naive_utc
from shared.crypto import get_secret_box
from shared.db import Database, get_database
from shared.jobqueue import get_queue
from shared.jobs import RefreshTokenJob
from shared.ratelimit import Budget, MySqlThrottle
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Refresh this long before the stored expiry, so a request never leaves with a dying token.
EXPIRY_SKEW = timedelta(minutes=2)
# How long a caller waits for another process's refresh of the same account to finish.
LOCK_WAIT_SECONDS = 30


class RefreshLockBusy(Exception):
    """Another process held the account's refresh lock for longer than we waited."""


@dataclass(frozen=True)
class StoredTokens:
    """The decrypted pair of one account as stored, with its generation (bumped per rotation)."""

    account_id: int
    access_token: SecretStr
    refresh_token: SecretStr
    expires_at: datetime
    refreshed_at: datetime | None
    generation: int

    def expires_within(self, delta: timedelta, *, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or aware_utcnow()) + delta


def build_oauth(
    settings: Settings | None = None, *, timeout: float | tuple[float, float] = (5, 20)
) -> AmoCrmOAuth:
    """The OAuth client from settings (AMOCRM_API_URL, when set, receives every token call)."""
    s = settings or get_settings()
    return AmoCrmOAuth(
        s.amocrm_client_id,
        s.amocrm_client_secret,
        s.amocrm_redirect_uri,
        api_url_override=s.amocrm_api_url,
        timeout=timeout,
    )


def refresh_lock_name(db: Database, account_id: int) -> str:
    # GET_LOCK names are server-wide: the database name keeps deployments (and test runs) apart.
    return f"{db.name[:40]}:tok:{account_id}"


def load_tokens(db: Database, account_id: int) -> StoredTokens | None:
    """The account's stored pair, decrypted; None when it has none (disabled, never installed)."""
    row = db.fetch_one(
        "SELECT account_id, access_token_enc, refresh_token_enc, expires_at, refreshed_at, "
        "generation FROM oauth_tokens WHERE account_id = %s",
        (account_id,),
    )
    if row is None:
        return None
    box = get_secret_box()
    return StoredTokens(
        account_id=int(row["account_id"]),
        access_token=SecretStr(box.decrypt(row["access_token_enc"])),
        refresh_token=SecretStr(box.decrypt(row["refresh_token_enc"])),
        expires_at=row["expires_at"].replace(tzinfo=UTC),
        refreshed_at=row["refreshed_at"].replace(tzinfo=UTC) if row["refreshed_at"] else None,
        generation=int(row["generation"]),
    )


def encrypted_pair(pair: TokenPair) -> tuple[bytes, bytes, datetime]:
    """(access, refresh, expires_at) ready for the oauth_tokens columns."""
    box = get_secret_box()
    return (
        box.encrypt(pair.access_token.get_secret_value()),
        box.encrypt(pair.refresh_token.get_secret_value()),
        naive_utc(pair.expires_at),
    )


def save_rotated_pair(db: Database, account_id: int, pair: TokenPair, *, generation: int) -> bool:
    """Store a refreshed pair if the stored one is still `generation`; bumps the generation."""
    access, refresh, expires = encrypted_pair(pair)
    changed = db.execute(
        "UPDATE oauth_tokens SET access_token_enc = %s, refresh_token_enc = %s, expires_at = %s, "
        "refreshed_at = %s, generation = generation + 1 WHERE account_id = %s AND generation = %s",
        (access, refresh, expires, naive_utc(aware_utcnow()), account_id, generation),
    )
    return changed == 1


def refresh_under_lock(
    db: Database,
    oauth: AmoCrmOAuth,
    account: AccountRow,
    *,
    still_needed: Callable[[StoredTokens], bool],
) -> StoredTokens | None:
    """Refresh the account's pair unless, re-read under its lock, `still_needed` says no.

    Returns the pair stored afterwards (None if the account has no usable tokens). Raises
    `OAuthRejected` after marking the account reauth_required, `OAuthTransient` for a retry,
    `RefreshLockBusy` if another process kept the lock too long.
    """
    with db.named_lock(refresh_lock_name(db, account.id), timeout=LOCK_WAIT_SECONDS) as acquired:
        if not acquired:
            raise RefreshLockBusy(f"refresh lock of account {account.id} is busy")
        # Re-read the status too: an account that needs re-auth (or was disabled) meanwhile
        # must not spend its dead refresh token on every API call that meets a 401.
        fresh = get_account(db, account.id)
        if fresh is None or fresh.status in ("reauth_required", "disabled"):
            return None
        current = load_tokens(db, account.id)
        if current is None or not still_needed(current):
            return current
        try:
            pair = oauth.refresh(account.host, current.refresh_token)
        except OAuthRejected as exc:
            # Terminal for this account only; its data stays, an admin re-authorizes it.
            record_amocrm_failure(db, account.id, exc)
            raise
        # The old refresh token is spent now: store the new pair before anything else can fail.
        if not save_rotated_pair(db, account.id, pair, generation=current.generation):
            # Only possible if someone wrote tokens without the lock (an install racing us);
            # theirs is the newer grant, so keep it.
            log.warning("stored pair changed during refresh", extra={"account_id": account.id})
        else:
            log.info(
                "token refreshed",
                extra={"account_id": account.id, "generation": current.generation + 1},
            )
        return load_tokens(db, account.id)


class DbTokenProvider:
    """The amoCRM client's token source for one account, backed by oauth_tokens."""

    def __init__(
        self,
        db: Database,
        oauth: AmoCrmOAuth,
        account: AccountRow,
    ) -> None:
        self._db = db
        self._oauth = oauth
        self._account = account

    def __repr__(self) -> str:
        return f"DbTokenProvider(account_id={self._account.id})"

    def access_token(self) -> str:
        """The stored access token, refreshed first (under the lock) when it is about to expire."""
        current = load_tokens(self._db, self._account.id)
        if current is None:
            raise Unauthorized(f"account {self._account.id} has no tokens", status=401)
        if not current.expires_within(EXPIRY_SKEW):
            return current.access_token.get_secret_value()
        return self._refresh(lambda stored: stored.expires_within(EXPIRY_SKEW))

    def refresh_after_unauthorized(self, rejected_access_token: str) -> str:
        """Refresh only if the stored token is still the one amoCRM rejected."""
        return self._refresh(
            lambda stored: stored.access_token.get_secret_value() == rejected_access_token
        )

    def _refresh(self, still_needed: Callable[[StoredTokens], bool]) -> str:
        try:
            stored = refresh_under_lock(
                self._db,
                self._oauth,
                self._account,
                still_needed=still_needed,
            )
        except OAuthRejected as exc:
            raise Unauthorized(
                f"account {self._account.id} needs re-authorization: {exc.hint or exc}",
                status=401,
            ) from exc
        except RefreshLockBusy as exc:
            raise OAuthTransient(str(exc)) from exc
        if stored is None:
            raise Unauthorized(f"account {self._account.id} has no tokens", status=401)
        return stored.access_token.get_secret_value()


def amocrm_budgets(account_id: int, settings: Settings, *, bulk: bool) -> list[Budget]:
    """The request budgets one amoCRM call of this account must fit, shared by every process.

    The account's own (AMOCRM_RATE_LIMIT_RPS), the egress IP's across all accounts
    (AMOCRM_IP_RATE_LIMIT_RPS) and, for bulk work, the bulk lane's share of the IP budget.
    """
    egress = settings.egress_id
    budgets = [
        Budget(str(account_id), settings.amocrm_rate_limit_rps),
        Budget(f"egress:{egress}", settings.amocrm_ip_rate_limit_rps),
    ]
    if bulk:
        bulk_rate = settings.amocrm_ip_rate_limit_rps * settings.amocrm_bulk_share
        budgets.append(Budget(f"egress-bulk:{egress}", bulk_rate))
    return budgets


def amocrm_client_for(
    account: AccountRow, *, db: Database | None = None, bulk: bool = False
) -> AmoCrmClient:
    """An amoCRM client for this account with DB-backed tokens and the shared throttle.

    `bulk` for full syncs and reconciles: they get at most AMOCRM_BULK_SHARE of the IP budget.
    """
    settings = get_settings()
    database = db or get_database()
    base_url = settings.amocrm_api_url or f"https://{account.host}"
    return AmoCrmClient(
        base_url,
        DbTokenProvider(database, build_oauth(settings), account),
        throttle=MySqlThrottle(database, amocrm_budgets(account.id, settings, bulk=bulk)),
        rate_limit_pause=settings.amocrm_rate_limit_pause_seconds,
        block_gate=BlockGuard(database, account.id, settings=settings),
    )


# Scheduled refreshes leave a pair alone while it will outlive the run after the next one by
# this much (see enqueue_expiring_refreshes).
SCHEDULED_REFRESH_MARGIN = timedelta(hours=1)


def enqueue_expiring_refreshes(hours: int, *, every_minutes: int | None = None) -> int:
    """Queue a refresh for every active account whose token expires within `hours`.

    `every_minutes` is how often the caller (the scheduler) runs this. Then a pair is queued
    only when it would not otherwise stay valid until the run after the next one plus
    SCHEDULED_REFRESH_MARGIN: amoCRM access tokens live 24 h, so with the documented horizon of
    24 h (the original's daily `-t 24`) and an hourly schedule, "expires within 24 h" is true of
    every pair at every run, and each account would be refreshed 24 times a day. Keyed on
    expires_at, the rule needs no refreshed_at (a fresh install has none) and follows whatever
    lifetime amoCRM grants: with 24 h tokens and hourly runs each pair is refreshed at about 21 h
    of age, once a day, and a missed run or two still leave it valid. `hours` stays the upper
    bound; without `every_minutes` (`amosync update-tokens -t`) every pair within it is queued.
    Concurrent or duplicate jobs are harmless: the consumer refreshes under the account's lock.
    """
    if hours < 0:
        raise ValueError("hours must be >= 0")
    window = timedelta(hours=hours)
    if every_minutes is not None:
        window = min(window, 2 * timedelta(minutes=every_minutes) + SCHEDULED_REFRESH_MARGIN)
    db = get_database()
    rows = db.fetch_all(
        "SELECT a.id FROM accounts a JOIN oauth_tokens t ON t.account_id = a.id "
        "WHERE a.status = 'active' AND t.expires_at <= %s ORDER BY t.expires_at",
        (naive_utc(aware_utcnow() + window),),
    )
    queue = get_queue()
    for row in rows:
        queue.put(RefreshTokenJob(account_id=int(row["id"]), reason=f"expires within {window}"))
    log.info(
        "refresh jobs queued",
        extra={
            "count": len(rows),
            "hours": hours,
            "window_minutes": window // timedelta(minutes=1),
        },
    )
    return len(rows)
