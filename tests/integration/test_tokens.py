"""Token storage and refresh: real MySQL and beanstalkd, the amoCRM sandbox in a thread."""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from sandbox.amocrm import SandboxConfig, create_app
from sandbox.amocrm.state import AccountRec, World
from shared.accounts import get_account
from shared.amocrm.errors import Unauthorized
from shared.consumers.token_refresh import handle_refresh_batch
from shared.db import Database, get_database
from shared.jobqueue import Delivery, RetryJob, get_queue
from shared.jobs import RefreshTokenJob
from shared.oauth_flow import complete_authorization
from shared.settings import get_settings
from shared.tokens import (
    DbTokenProvider,
    amocrm_client_for,
    build_oauth,
    enqueue_expiring_refreshes,
    load_tokens,
)
from tests.conftest import reset_caches

pytestmark = pytest.mark.integration


@dataclass
class AmoSandbox:
    """The emulator in a thread, configured with this test run's client id/secret/redirect."""

    url: str
    world: World

    def new_account(self, subdomain: str | None = None) -> int:
        return self.world.create_account(subdomain=subdomain).id

    def code(self, account_id: int) -> str:
        return self.world.issue_code(self.world.account(account_id))

    def token_calls(self) -> list[dict[str, Any]]:
        return [e for e in self.world.request_log if e["path"].startswith("/oauth2")]


@pytest.fixture(scope="module")
def amo_server(base_env: dict[str, str]) -> Iterator[AmoSandbox]:
    config = SandboxConfig(
        client_id=base_env["AMOCRM_CLIENT_ID"],
        client_secret=base_env["AMOCRM_CLIENT_SECRET"],
        redirect_uri=base_env["AMOCRM_REDIRECT_URI"],
        seed_accounts=0,
        rate_limit=0,
        # Off explicitly, like the per-account limit: the emulator's defaults are amoCRM's rules
        # (7/s per client IP, repeated 429s → a 403 ban of the IP), but these tests drive token
        # refreshes and API probes from one IP without our client's shared per-IP budget, and a
        # ban escalated in one test would fail the next ones in the module (issue 12 item 1).
        ip_rate_limit=0,
        ban_after_429s=0,
    )
    app = create_app(config)
    world: World = app.config["WORLD"]
    # Account ids of their own: the session's stack runs another sandbox with the same id
    # sequence, and both install into the same database.
    world._account_ids = itertools.count(1_900_000_000 + secrets.randbelow(10**8), 7919)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield AmoSandbox(f"http://127.0.0.1:{server.server_port}", app.config["WORLD"])
    server.shutdown()


@pytest.fixture
def amo(
    amo_server: AmoSandbox, monkeypatch: pytest.MonkeyPatch, db: Database, beanstalkd: Any
) -> AmoSandbox:
    """The sandbox as this test's amoCRM (token calls included), with MySQL and a fresh tube."""
    monkeypatch.setenv("AMOCRM_API_URL", amo_server.url)
    monkeypatch.setenv("AMOCRM_AUTH_URL", f"{amo_server.url}/oauth")
    reset_caches()
    amo_server.world.config.token_ttl = 86400
    return amo_server


def install_from_widget(world: World, account: AccountRec) -> None:
    """Authorize a sandbox account the way amoCRM's widget install does it (no state)."""
    complete_authorization(
        get_database(),
        get_settings(),
        code=world.issue_code(account),
        referer=account.host,
        state=None,
        from_widget=True,
        client_id=None,
    )


def install(amo: AmoSandbox, subdomain: str | None = None) -> int:
    """A new sandbox account, installed the way amoCRM's widget install does it."""
    account_id = amo.new_account(subdomain)
    install_from_widget(amo.world, amo.world.account(account_id))
    return account_id


def delivery(account_id: int, job_id: int = 1) -> Delivery[RefreshTokenJob]:
    return Delivery(job_id=job_id, job=RefreshTokenJob(account_id=account_id), attempts=1)


def api_works(amo: AmoSandbox, access_token: str) -> bool:
    resp = requests.get(
        f"{amo.url}/api/v4/account",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=5,
    )
    return resp.status_code == 200


def age_tokens(db: Database, account_id: int, *, expires_in: timedelta) -> None:
    expires = (datetime.now(UTC) + expires_in).replace(tzinfo=None)
    db.execute(
        "UPDATE oauth_tokens SET expires_at = %s, refreshed_at = NULL WHERE account_id = %s",
        (expires, account_id),
    )


def test_install_stores_encrypted_tokens(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 1 and stored.refreshed_at is None
    raw = db.fetch_one("SELECT * FROM oauth_tokens WHERE account_id = %s", (account_id,))
    assert raw is not None
    access = stored.access_token.get_secret_value().encode()
    refresh = stored.refresh_token.get_secret_value().encode()
    for value in raw.values():
        if isinstance(value, bytes | str):
            blob = value if isinstance(value, bytes) else value.encode()
            assert access not in blob and refresh not in blob
    assert api_works(amo, stored.access_token.get_secret_value())


def test_enqueue_picks_only_active_accounts_expiring_soon(amo: AmoSandbox, db: Database) -> None:
    soon, later, reauth, disabled = (install(amo) for _ in range(4))
    for account_id in (soon, reauth, disabled):
        age_tokens(db, account_id, expires_in=timedelta(hours=2))
    age_tokens(db, later, expires_in=timedelta(hours=30))
    db.execute("UPDATE accounts SET status = 'reauth_required' WHERE id = %s", (reauth,))
    db.execute("UPDATE accounts SET status = 'disabled' WHERE id = %s", (disabled,))
    # Accounts from other tests share the database: count only ours.
    queued = enqueue_expiring_refreshes(hours=3)
    client = get_queue().connect(watch="token-refresh")
    ids = []
    for _ in range(queued):
        job = client.reserve(timeout=1)
        ids.append(RefreshTokenJob.model_validate_json(job.body).account_id)
        client.delete(job)
    client.close()
    assert soon in ids
    assert not {later, reauth, disabled} & set(ids)


def test_consumer_rotates_pair_and_new_pair_works(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    before = load_tokens(db, account_id)
    assert before is not None
    handle_refresh_batch([delivery(account_id)])
    after = load_tokens(db, account_id)
    assert after is not None
    assert after.generation == before.generation + 1
    assert after.refresh_token != before.refresh_token
    assert after.refreshed_at is not None
    assert api_works(amo, after.access_token.get_secret_value())
    # The old refresh token is spent now: amoCRM (and the sandbox) refuse it.
    old = requests.post(
        f"{amo.url}/oauth2/access_token",
        json={
            "client_id": get_settings().amocrm_client_id,
            "client_secret": get_settings().amocrm_client_secret.get_secret_value(),
            "redirect_uri": get_settings().amocrm_redirect_uri,
            "grant_type": "refresh_token",
            "refresh_token": before.refresh_token.get_secret_value(),
        },
        timeout=5,
    )
    assert old.status_code == 401


def test_duplicate_jobs_in_one_batch_refresh_once(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    handle_refresh_batch([delivery(account_id, n) for n in range(1, 4)])
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 2


@pytest.mark.parametrize("min_age", [5, 0])
def test_racing_consumers_leave_account_healthy(
    amo: AmoSandbox, db: Database, monkeypatch: pytest.MonkeyPatch, min_age: int
) -> None:
    # min_age=0 turns the duplicate guard off: then only the lock + re-read keep it healthy.
    monkeypatch.setenv("TOKEN_REFRESH_MIN_AGE_MINUTES", str(min_age))
    reset_caches()
    account_id = install(amo)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def consume(n: int) -> None:
        barrier.wait()
        try:
            handle_refresh_batch([delivery(account_id, n)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    stored = load_tokens(db, account_id)
    assert stored is not None
    # Without the guard, jobs that started before another's refresh still skip (its
    # refreshed_at is newer than their start); the rest refresh one after another.
    assert stored.generation == 2 if min_age else 2 <= stored.generation <= 5
    account = get_account(db, account_id)
    assert account is not None and account.status == "active"
    assert api_works(amo, stored.access_token.get_secret_value())
    # The stored refresh token is the live one: another refresh succeeds.
    build_oauth().refresh(account.host, stored.refresh_token)


def test_rejected_refresh_marks_only_that_account(amo: AmoSandbox, db: Database) -> None:
    broken, healthy = install(amo), install(amo)
    amo.world.revoke_tokens(amo.world.account(broken))
    handle_refresh_batch([delivery(broken), delivery(healthy, 2)])  # no RetryJob: terminal
    broken_row, healthy_row = get_account(db, broken), get_account(db, healthy)
    assert broken_row is not None and broken_row.status == "reauth_required"
    assert "revoked" in (broken_row.status_reason or "")
    assert healthy_row is not None and healthy_row.status == "active"
    # Nothing of the account is deleted; an admin re-authorizes it.
    assert load_tokens(db, broken) is not None
    # Later jobs for it are skipped without calling amoCRM.
    calls = len(amo.token_calls())
    handle_refresh_batch([delivery(broken)])
    assert len(amo.token_calls()) == calls


def test_unreachable_token_endpoint_retries(
    amo: AmoSandbox, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.devstack import free_port

    account_id = install(amo)
    monkeypatch.setenv("AMOCRM_API_URL", f"http://127.0.0.1:{free_port()}")
    reset_caches()
    with pytest.raises(RetryJob):
        handle_refresh_batch([delivery(account_id)])
    account = get_account(db, account_id)
    assert account is not None and account.status == "active"
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 1


def test_provider_refreshes_expired_token_proactively(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    age_tokens(db, account_id, expires_in=timedelta(seconds=30))
    account = get_account(db, account_id)
    assert account is not None
    client = amocrm_client_for(account)
    assert client.get_account().id == account_id
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 2


def test_unauthorized_refreshes_only_if_stored_token_was_rejected(
    amo: AmoSandbox, db: Database
) -> None:
    account_id = install(amo)
    account = get_account(db, account_id)
    assert account is not None
    provider = DbTokenProvider(db, build_oauth(), account)
    first = provider.access_token()
    fresh = provider.refresh_after_unauthorized(first)
    assert fresh != first
    # Another caller still holding the old token: it gets the stored one, no second refresh.
    assert provider.refresh_after_unauthorized(first) == fresh
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 2


def test_api_401_after_revocation_marks_reauth(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    account = get_account(db, account_id)
    assert account is not None
    amo.world.revoke_tokens(amo.world.account(account_id))
    with pytest.raises(Unauthorized):
        amocrm_client_for(account).get_account()
    after = get_account(db, account_id)
    assert after is not None and after.status == "reauth_required"


def test_no_refresh_attempts_once_account_needs_reauth(amo: AmoSandbox, db: Database) -> None:
    account_id = install(amo)
    account = get_account(db, account_id)
    assert account is not None
    amo.world.revoke_tokens(amo.world.account(account_id))
    client = amocrm_client_for(account)
    with pytest.raises(Unauthorized):
        client.get_account()
    calls = len(amo.token_calls())
    with pytest.raises(Unauthorized):
        client.get_account()  # 401 again, but no second spend of the dead refresh token
    assert len(amo.token_calls()) == calls


@pytest.mark.parametrize("status", [429, 408])
def test_rate_limited_token_endpoint_retries_later_and_keeps_account_active(
    amo: AmoSandbox, db: Database, status: int
) -> None:
    import responses

    account_id = install(amo)
    with responses.RequestsMock() as mock:
        mock.post(
            f"{amo.url}/oauth2/access_token",
            status=status,
            json={"title": "Too Many Requests", "status": status, "retry_after": 90},
        )
        with pytest.raises(RetryJob) as info:
            handle_refresh_batch([delivery(account_id)])
    assert info.value.delay == 90
    account = get_account(db, account_id)
    assert account is not None and account.status == "active"
    # The grant was never spent: the next attempt rotates it normally.
    handle_refresh_batch([delivery(account_id)])
    stored = load_tokens(db, account_id)
    assert stored is not None and stored.generation == 2


def test_record_amocrm_failure_stops_the_account_only_for_terminal_refusals(
    amo: AmoSandbox, db: Database
) -> None:
    from shared.accounts import record_amocrm_failure
    from shared.amocrm import errors as amo_errors

    account_id = install(amo)
    for harmless in (
        amo_errors.Transient("502"),
        amo_errors.RateLimited("429", retry_after=5),
        amo_errors.OAuthTransient("429", retry_after=5),
        amo_errors.PaymentRequired("402"),
        # A 403 is a block of our IP or the account that heals by itself: never a status.
        amo_errors.Blocked("403", status=403),
        ValueError("not amoCRM"),
    ):
        assert record_amocrm_failure(db, account_id, harmless) is False
    assert get_account(db, account_id).status == "active"  # type: ignore[union-attr]
    rejected = amo_errors.OAuthRejected("401", hint="Token has been revoked", status=401)
    assert record_amocrm_failure(db, account_id, rejected)
    after = get_account(db, account_id)
    assert after is not None and after.status == "reauth_required"
    assert "revoked" in (after.status_reason or "")
    # A disabled account (its tokens deleted by amoCRM's hook) stays disabled.
    db.execute("UPDATE accounts SET status = 'disabled' WHERE id = %s", (account_id,))
    assert record_amocrm_failure(db, account_id, amo_errors.Unauthorized("401", status=401))
    assert get_account(db, account_id).status == "disabled"  # type: ignore[union-attr]


def _queued_refreshes(count: int) -> list[int]:
    client = get_queue().connect(watch="token-refresh")
    ids = []
    try:
        for _ in range(count):
            job = client.reserve(timeout=1)
            ids.append(RefreshTokenJob.model_validate_json(job.body).account_id)
            client.delete(job)
    finally:
        client.close()
    return ids


def test_scheduled_enqueue_skips_pairs_that_outlive_the_next_run(
    amo: AmoSandbox, db: Database
) -> None:
    # amoCRM's 24 h tokens, the documented 24 h horizon, an hourly schedule.
    fresh, refreshed_now, due, missed_runs = (install(amo) for _ in range(4))
    handle_refresh_batch([delivery(refreshed_now)])
    age_tokens(db, due, expires_in=timedelta(hours=2, minutes=50))
    age_tokens(db, missed_runs, expires_in=timedelta(minutes=20))
    queued = _queued_refreshes(enqueue_expiring_refreshes(hours=24, every_minutes=60))
    assert due in queued and missed_runs in queued
    assert fresh not in queued and refreshed_now not in queued
    # Still valid past the run after next plus the margin: left for a later run.
    age_tokens(db, due, expires_in=timedelta(hours=3, minutes=10))
    assert due not in _queued_refreshes(enqueue_expiring_refreshes(hours=24, every_minutes=60))
    # An operator's `update-tokens -t 24` (no schedule) still queues every pair in the horizon.
    queued = _queued_refreshes(enqueue_expiring_refreshes(hours=24))
    assert {fresh, refreshed_now, due, missed_runs} <= set(queued)


def test_hourly_schedule_refreshes_each_account_about_once_a_day(
    amo: AmoSandbox, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shared.consumers.token_refresh as token_refresh
    import shared.tokens as tokens

    account_id = install(amo)
    clock = [datetime.now(UTC)]
    for module in (tokens, token_refresh):
        monkeypatch.setattr(module, "aware_utcnow", lambda: clock[0])
    refreshes = 0
    for _hour in range(72):
        queued = _queued_refreshes(enqueue_expiring_refreshes(hours=24, every_minutes=60))
        if account_id in queued:
            handle_refresh_batch([delivery(account_id)])
            # A refreshed pair expires 24 h after the (simulated) refresh.
            expires = (clock[0] + timedelta(hours=24)).replace(tzinfo=None)
            db.execute(
                "UPDATE oauth_tokens SET expires_at = %s WHERE account_id = %s",
                (expires, account_id),
            )
            refreshes += 1
        stored = load_tokens(db, account_id)
        assert stored is not None and stored.expires_at > clock[0] + timedelta(hours=1)
        clock[0] += timedelta(hours=1)
    assert refreshes == 3
