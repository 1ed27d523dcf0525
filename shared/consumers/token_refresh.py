"""The token-refresh consumer: one account per job, safe against duplicate jobs.

amoCRM rotates refresh tokens: the refresh itself runs under the account's lock in
`shared.tokens.refresh_under_lock`, so two consumers (or a duplicate job) never spend a grant
twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from shared.accounts import get_account
from shared.amocrm.errors import OAuthRejected, OAuthTransient
from shared.amocrm.oauth import AmoCrmOAuth
from shared.clock import aware_utcnow
from shared.db import Database, get_database
from shared.jobqueue import Delivery, RetryJob
from shared.jobs import RefreshTokenJob
from shared.settings import get_settings
from shared.tokens import RefreshLockBusy, StoredTokens, build_oauth, refresh_under_lock

log = logging.getLogger(__name__)


def handle_refresh_batch(batch: Sequence[Delivery[RefreshTokenJob]]) -> None:
    """Consumer of `token-refresh`: one account per job, safe against duplicate jobs."""
    settings = get_settings()
    db = get_database()
    oauth = build_oauth(settings)
    min_age = timedelta(minutes=settings.token_refresh_min_age_minutes)
    for delivery in batch:
        _refresh_one(db, oauth, delivery, min_age=min_age)


def _refresh_one(
    db: Database, oauth: AmoCrmOAuth, delivery: Delivery[RefreshTokenJob], *, min_age: timedelta
) -> None:
    account_id = delivery.job.account_id
    account = get_account(db, account_id)
    if account is None or not account.is_active:
        # Disabled or awaiting re-auth: nothing to refresh, and retrying would not change that.
        log.info(
            "refresh skipped: account not active",
            extra={"account_id": account_id, "status": account.status if account else None},
        )
        return
    started = aware_utcnow()

    def still_needed(stored: StoredTokens) -> bool:
        # refreshed_at is set by refreshes only (an install leaves it NULL): a refresh moments
        # ago means a duplicate job already did this one's work. Refreshing again would be safe
        # (we hold the lock and use the newest token) but would spend a grant for nothing.
        return stored.refreshed_at is None or started - stored.refreshed_at >= min_age

    try:
        stored = refresh_under_lock(db, oauth, account, still_needed=still_needed)
    except OAuthRejected as exc:
        # Terminal: no retry; refresh_under_lock marked the account and raised the alert.
        log.info("refresh rejected", extra={"account_id": account_id, "http_status": exc.status})
        return
    except OAuthTransient as exc:
        # A 429 says how long to wait; otherwise the consumer's backoff decides.
        raise RetryJob(f"account {account_id}: {exc}", delay=exc.retry_after) from exc
    except RefreshLockBusy as exc:
        raise RetryJob(f"account {account_id}: {exc}") from exc
    if stored is None:
        log.info("refresh skipped: account has no tokens", extra={"account_id": account_id})
