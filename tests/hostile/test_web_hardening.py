"""The web layer under attack (issue 18, findings 2, 3, 4, 6, 7; issue 12: webhook 413, `aud`).

Through the gateway against the session stack where nginx takes part; straight at a function
(loaded the way functions-framework loads it, real MySQL and beanstalkd) where a setting must
differ from the stack's (the admin limiter) or nginx would answer before the function does.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import functions_framework
import jwt
import pytest
import requests

from tests.conftest import reset_caches
from tests.hostile.conftest import (
    Target,
    account_host,
    changed,
    check_response,
    quiesce,
    snapshot,
    widget_claims,
    widget_token_calls,
)

pytestmark = [pytest.mark.hostile]

ROOT = Path(__file__).resolve().parents[2]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _db() -> Any:
    from shared.db import get_database

    return get_database()


def _host(target: Target) -> str:
    return account_host(target.account_id)


def _claims(target: Target, **overrides: Any) -> dict[str, Any]:
    return widget_claims(target, **overrides)


def _token(target: Target, **overrides: Any) -> str:
    return jwt.encode(
        _claims(target, **overrides), target.env["AMOCRM_CLIENT_SECRET"], algorithm="HS256"
    )


def _stack_logs(target: Target) -> str:
    workdir = target.stack.workdir
    paths = [p for p in workdir.glob("*.log") if not p.name.startswith("sandbox-")]
    paths += sorted((workdir / "nginx").glob("*.log"))
    return "\n".join(p.read_text(errors="replace") for p in paths)


# --- finding 7 (and issue 12 item 7): the widget JWT, strictly -----------------------------------


@pytest.mark.e2e
def test_a_token_as_amocrm_signs_it_is_accepted(target: Target) -> None:
    resp = requests.get(
        f"{target.url}/widget/status", headers={"X-Auth-Token": _token(target)}, timeout=15
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case",
    [
        "iss-other-account",
        "iss-lookalike",
        "iss-missing",
        "aud-list",
        "aud-public-url-with-port",
        "account-id-string",
        "account-id-float",
        "account-id-true",
        "subdomain-other",
        "user-id-string",
    ],
)
def test_loose_widget_tokens_are_refused(target: Target, case: str) -> None:
    good = _claims(target)
    public = urlsplit(target.env["PUBLIC_URL"])
    with_port = f"{public.scheme}://{public.netloc}"
    # Each case with the reason the refusal must give (not just any 401).
    overrides, reason = {
        "iss-other-account": (
            {"iss": "https://another.amocrm.ru", "subdomain": "another"},
            "(iss)",
        ),
        "iss-lookalike": ({"iss": f"https://{_host(target)}.evil.example"}, "(iss)"),
        "iss-missing": ({"iss": None}, '"iss"'),
        # A list holding both the old and the right audience: only one string is accepted.
        "aud-list": ({"aud": [good["aud"], with_port]}, "another site"),
        # The gateway's URL with its port is not what amoCRM signs (scheme + host only).
        "aud-public-url-with-port": ({"aud": with_port}, "another site"),
        "account-id-string": ({"account_id": str(target.account_id)}, "account_id"),
        "account-id-float": ({"account_id": target.account_id + 0.5}, "account_id"),
        "account-id-true": ({"account_id": True}, "account_id"),
        "subdomain-other": ({"subdomain": "another"}, "subdomain"),
        "user-id-string": ({"user_id": "1"}, "user_id"),
    }[case]
    assert public.port is not None  # the stack's PUBLIC_URL carries a port: the case is real
    quiesce()
    before = snapshot(_db())
    for route, resp in widget_token_calls(target, _token(target, **overrides)):
        check_response(target, resp, where=f"{case} {route}")
        assert resp.status_code == 401, (case, route, resp.text)
        assert resp.json()["error"]["code"] == "invalid_token", resp.text
        assert reason in resp.json()["error"]["message"], (case, resp.text)
    assert changed(before, snapshot(_db())) == {}


# --- finding 2: JSON depth and size ------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("depth", [21, 30_000])
def test_deeply_nested_json_is_a_clear_400(target: Target, depth: int) -> None:
    body = '{"api_key":' + "[" * depth + "]" * depth + "}"
    quiesce()
    before = snapshot(_db())
    resp = requests.post(
        f"{target.url}/widget",
        data=body,
        headers={"X-Auth-Token": _token(target), "Content-Type": "application/json"},
        timeout=30,
    )
    check_response(target, resp, where=f"JSON nested {depth} deep")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "json_too_deep"
    assert "deeper than 20" in resp.json()["error"]["message"]
    # Only the spent token's jti was written.
    assert set(changed(before, snapshot(_db()))) <= {"widget_token_uses"}


@pytest.mark.e2e
def test_a_json_body_over_the_route_limit_is_413(target: Target) -> None:
    body = json.dumps({"api_key": "k", "pad": "x" * 70_000})
    resp = requests.post(
        f"{target.url}/widget",
        data=body,
        headers={"X-Auth-Token": _token(target), "Content-Type": "application/json"},
        timeout=30,
    )
    check_response(target, resp, where="a 70 KB JSON body")
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"


@pytest.mark.e2e
@pytest.mark.parametrize("body", ["{", "[1, 2]", '"text"', '{"a": 1}}', "\xff"])
def test_invalid_json_is_a_clear_400(target: Target, body: str) -> None:
    resp = requests.post(
        f"{target.url}/widget",
        data=body.encode("latin-1"),
        headers={"X-Auth-Token": _token(target), "Content-Type": "application/json"},
        timeout=15,
    )
    check_response(target, resp, where=f"JSON body {body!r}")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json", resp.text


# --- finding 3: request ids ----------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "given", ["a" * 6000, "a" * 129, "has space", "quote\"and'<tag>", "caf\u00e9"]
)
def test_an_unusable_request_id_is_replaced_not_echoed(target: Target, given: str) -> None:
    resp = requests.post(
        f"{target.url}/sync",
        params={"account_id": target.account_id},
        headers={**target.admin(), "X-Request-Id": given.encode("utf-8").decode("latin-1")},
        timeout=15,
    )
    # The sync ran (or was already running): the caller must hear so, not a 503 "retry later".
    assert resp.status_code in (200, 202), resp.text
    echoed = resp.headers["X-Request-Id"]
    assert echoed != given and 0 < len(echoed) <= 128


@pytest.mark.e2e
def test_a_plain_request_id_is_kept_end_to_end(target: Target) -> None:
    given = "trace-" + "9" * 122  # 128 characters
    resp = requests.get(
        f"{target.url}/sync/status",
        params={"account_id": target.account_id},
        headers={**target.admin(), "X-Request-Id": given},
        timeout=15,
    )
    assert resp.status_code in (200, 404), resp.text
    assert resp.headers["X-Request-Id"] == given
    time.sleep(0.3)
    assert f'"request_id":"{given}"' in (target.stack.workdir / "nginx" / "access.log").read_text()


# --- finding 4: strict webhook routes, nothing secret in any log ---------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("prefix", ["%20", "+", "%2B", "%09", "-0", "0x"])
def test_lookalike_webhook_ids_are_404_and_never_logged(target: Target, prefix: str) -> None:
    secret = target.secrets["webhook secret"]
    url = f"{target.url}/webhook/{prefix}{target.account_id}/{secret}"
    body = f"account[id]={target.account_id}&contacts[delete][0][id]=1"
    quiesce()
    before = snapshot(_db())
    resp = requests.post(url, data=body, headers=FORM, timeout=15)
    check_response(target, resp, where=f"webhook id {prefix!r}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "webhook_not_found"
    assert changed(before, snapshot(_db())) == {}
    time.sleep(0.3)  # nginx writes its access line after answering
    logs = _stack_logs(target)
    assert secret not in logs, f"the webhook secret is in a log after {prefix!r}"
    assert "/webhook/***" in (target.stack.workdir / "nginx" / "access.log").read_text()


@pytest.fixture
def webhook_app(db: Any, beanstalkd: Any) -> Iterator[tuple[Any, int, str]]:
    from shared.webhook_intake import ensure_webhook_secret

    account_id = 7_400_000_000 + secrets.randbelow(10**8)
    db.execute(
        "INSERT INTO accounts (id, name, host) VALUES (%s, %s, %s)",
        (account_id, f"web{account_id}", f"web{account_id}.amocrm.ru"),
    )
    secret = ensure_webhook_secret(db, account_id)
    app = functions_framework.create_app("webhook", str(ROOT / "functions/webhook/main.py"))
    yield app.test_client(), account_id, secret


@pytest.mark.integration
@pytest.mark.parametrize("prefix", [" ", "+", "%09", "%2B", "%20", "0"])
def test_the_function_itself_matches_ids_strictly(
    webhook_app: tuple[Any, int, str], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, account_id, secret = webhook_app
    body = f"account[id]={account_id}&contacts[delete][0][id]=1"
    resp = client.post(f"/webhook/{prefix}{account_id}/{secret}", data=body, headers=FORM)
    # "0<id>" is still ASCII digits (the same account): only non-digits are refused.
    assert resp.status_code == (200 if prefix == "0" else 404), resp.get_data(as_text=True)
    if resp.status_code == 404:
        assert resp.get_json()["error"]["code"] == "webhook_not_found"
    # Every field of every record (the `path` extra included), not only the messages.
    logged = [str(v) for record in caplog.records for v in record.__dict__.values()]
    assert not any(secret in value for value in logged), "the webhook secret was logged"


# --- issue 12 item 7: webhook bodies over the limit ----------------------------------------------


@pytest.mark.integration
def test_a_webhook_body_over_the_limit_is_413_before_anything_is_queued(
    webhook_app: tuple[Any, int, str],
) -> None:
    from shared.jobqueue import get_queue

    client, account_id, secret = webhook_app
    head = f"account[id]={account_id}&account[subdomain]=x"
    body = head + "&contacts[delete][0][id]=1" * (2 * 1024 * 1024 // 24)
    assert len(body) > 2 * 1024 * 1024
    tube_before = get_queue().tube_stats("contact-events")["total-jobs"]
    resp = client.post(f"/webhook/{account_id}/{secret}", data=body, headers=FORM)
    assert resp.status_code == 413, resp.get_data(as_text=True)[:300]
    assert resp.get_json()["error"]["code"] == "payload_too_large"
    assert get_queue().tube_stats("contact-events")["total-jobs"] == tube_before


@pytest.mark.e2e
def test_a_webhook_body_over_the_limit_is_413_json_at_the_gateway(target: Target) -> None:
    body = f"account[id]={target.account_id}&" + "a=b&" * (2 * 1024 * 1024 // 4 + 10)
    quiesce()
    before = snapshot(_db())
    resp = requests.post(target.webhook_url, data=body, headers=FORM, timeout=30)
    check_response(target, resp, where="a 2 MiB webhook")
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    assert changed(before, snapshot(_db())) == {}


# --- finding 6: guessing the admin token ---------------------------------------------------------


@pytest.fixture
def sync_app(mysql_database: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The limiter's real defaults (the session stack raises the limit for the other tests).
    monkeypatch.delenv("ADMIN_AUTH_MAX_FAILURES", raising=False)
    monkeypatch.delenv("ADMIN_AUTH_WINDOW_SECONDS", raising=False)
    reset_caches()
    app = functions_framework.create_app("sync", str(ROOT / "functions/sync/main.py"))
    return app.test_client()


def _ip() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}-{uuid.uuid4().hex[:6]}"


@pytest.mark.integration
def test_wrong_admin_credentials_are_limited_per_client_ip(sync_app: Any) -> None:
    from shared.settings import get_settings

    settings = get_settings()
    limit, window = settings.admin_auth_max_failures, settings.admin_auth_window_seconds
    assert (limit, window) == (10, 300)
    admin = settings.admin_token.get_secret_value()
    ip, other_ip = _ip(), _ip()

    def call(token: str, client_ip: str, route: str = "/status") -> Any:
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": f"6.6.6.6, {client_ip}"}
        return sync_app.get(route, headers=headers)

    for attempt in range(limit):
        wrong = call(f"guess-{attempt}", ip, "/status" if attempt % 2 else "/sync/status")
        assert wrong.status_code == 401, (attempt, wrong.get_data(as_text=True))
    blocked = call("guess-more", ip)
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "too_many_attempts"
    retry_after = int(blocked.headers["Retry-After"])
    assert 1 <= retry_after <= window
    # Even the right token: a guesser must not learn when it hit.
    assert call(admin, ip).status_code == 429
    # Basic credentials (the status page's browser path) count the same way.
    assert (
        sync_app.get(
            "/status",
            headers={"Authorization": "Basic YTpi", "X-Forwarded-For": ip},
        ).status_code
        == 429
    )
    # Another address, and the same address without credentials, are not affected.
    assert call(admin, other_ip).status_code == 200
    assert sync_app.get("/status", headers={"X-Forwarded-For": ip}).status_code == 401


@pytest.mark.integration
def test_the_failure_count_is_shared_through_mysql(sync_app: Any, db: Any) -> None:
    ip = _ip()
    for _ in range(3):
        sync_app.get("/status", headers={"Authorization": "Bearer nope", "X-Forwarded-For": ip})
    # A second function process (here: the contacts function) reads the same counter.
    row = db.fetch_one("SELECT failures FROM admin_auth_failures WHERE client_ip = %s", (ip,))
    assert row is not None and row["failures"] == 3
    db.execute("UPDATE admin_auth_failures SET failures = 10 WHERE client_ip = %s", (ip,))
    contacts = functions_framework.create_app(
        "contacts", str(ROOT / "functions/contacts/main.py")
    ).test_client()
    resp = contacts.get(
        "/contacts?name=x", headers={"Authorization": "Bearer nope", "X-Forwarded-For": ip}
    )
    assert resp.status_code == 429 and "Retry-After" in resp.headers
    # An expired window starts over.
    db.execute(
        "UPDATE admin_auth_failures SET window_started_at = UTC_TIMESTAMP(6) - INTERVAL 301 SECOND "
        "WHERE client_ip = %s",
        (ip,),
    )
    again = contacts.get(
        "/contacts?name=x", headers={"Authorization": "Bearer nope", "X-Forwarded-For": ip}
    )
    assert again.status_code == 401
    row = db.fetch_one("SELECT failures FROM admin_auth_failures WHERE client_ip = %s", (ip,))
    assert row["failures"] == 1
