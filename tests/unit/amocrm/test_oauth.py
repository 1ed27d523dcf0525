"""OAuth: consent page, code exchange, refresh rotation, failures, disable hook."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from shared.amocrm import (
    AmoCrmClient,
    AmoCrmOAuth,
    OAuthRejected,
    OAuthTransient,
    StaticTokenProvider,
)
from shared.ratelimit import IntervalThrottle

from .conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Receiver, Sandbox

pytestmark = pytest.mark.unit

HOST = "sandbox1.amocrm.ru"


def api_ok(sandbox: Sandbox, access: str) -> int:
    resp = requests.get(
        f"{sandbox.url}/api/v4/account", headers={"Authorization": f"Bearer {access}"}, timeout=5
    )
    return resp.status_code


def test_exchange_code_returns_the_pair(sandbox: Sandbox) -> None:
    pair = sandbox.oauth().exchange_code(HOST, sandbox.code())
    assert abs(pair.expires_at.timestamp() - (time.time() + 86400)) < 5
    assert pair.expires_at.tzinfo is not None
    assert pair.api_domain == "api-b.amocrm.ru"
    secret = pair.access_token.get_secret_value()
    assert secret.count(".") == 2 and secret not in repr(pair)
    assert pair.refresh_token.get_secret_value() not in repr(pair)
    assert CLIENT_SECRET not in repr(sandbox.oauth())
    assert api_ok(sandbox, secret) == 200
    body = sandbox.requests_log("/oauth2")[0]
    assert body["status"] == 200


def test_code_is_single_use(sandbox: Sandbox) -> None:
    oauth, code = sandbox.oauth(), sandbox.code()
    oauth.exchange_code(HOST, code)
    with pytest.raises(OAuthRejected) as info:
        oauth.exchange_code(HOST, code)
    assert info.value.status == 400 and info.value.hint == "Authorization code has been revoked"


def test_code_expires_after_20_minutes(sandbox: Sandbox) -> None:
    with pytest.raises(OAuthRejected) as info:
        sandbox.oauth().exchange_code(HOST, sandbox.code(age_seconds=20 * 60 + 5))
    assert info.value.hint == "Authorization code has expired"
    assert sandbox.oauth().exchange_code(HOST, sandbox.code(age_seconds=19 * 60))


def test_wrong_client_credentials_are_terminal(sandbox: Sandbox) -> None:
    bad_id = AmoCrmOAuth("nope", CLIENT_SECRET, REDIRECT_URI, api_url_override=sandbox.url)
    with pytest.raises(OAuthRejected) as info:
        bad_id.exchange_code(HOST, sandbox.code())
    assert info.value.status == 400 and info.value.hint == "Check the `client_id` parameter"
    bad_secret = AmoCrmOAuth(CLIENT_ID, "wrong", REDIRECT_URI, api_url_override=sandbox.url)
    with pytest.raises(OAuthRejected) as info:
        bad_secret.exchange_code(HOST, sandbox.code())
    assert info.value.status == 401 and "Некорректный клиент" in str(info.value)
    bad_uri = AmoCrmOAuth(
        CLIENT_ID, CLIENT_SECRET, "https://x.test/cb", api_url_override=sandbox.url
    )
    with pytest.raises(OAuthRejected):
        bad_uri.exchange_code(HOST, sandbox.code())


def test_refresh_rotation_old_token_lives_until_new_is_used(sandbox: Sandbox) -> None:
    oauth = sandbox.oauth()
    first = oauth.exchange_code(HOST, sandbox.code())
    second = oauth.refresh(HOST, first.refresh_token)
    assert second.refresh_token != first.refresh_token
    # The response was "lost": the old refresh token still works, minting another pair.
    retry = oauth.refresh(HOST, first.refresh_token)
    assert api_ok(sandbox, retry.access_token.get_secret_value()) == 200
    # Using the new pair spent the old token and revoked the sibling pair.
    with pytest.raises(OAuthRejected) as info:
        oauth.refresh(HOST, first.refresh_token)
    assert info.value.status == 401 and info.value.hint == "Token has been revoked"
    assert api_ok(sandbox, second.access_token.get_secret_value()) == 401
    with pytest.raises(OAuthRejected):
        oauth.refresh(HOST, second.refresh_token)
    third = oauth.refresh(HOST, retry.refresh_token)
    assert api_ok(sandbox, third.access_token.get_secret_value()) == 200


def test_using_the_new_refresh_token_spends_the_old(sandbox: Sandbox) -> None:
    oauth = sandbox.oauth()
    first = oauth.exchange_code(HOST, sandbox.code())
    second = oauth.refresh(HOST, first.refresh_token)
    oauth.refresh(HOST, second.refresh_token)
    with pytest.raises(OAuthRejected) as info:
        oauth.refresh(HOST, first.refresh_token)
    assert info.value.hint == "Token has been revoked"


def test_emulator_accepts_a_form_body_too(sandbox: Sandbox) -> None:
    resp = requests.post(
        f"{sandbox.url}/oauth2/access_token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": sandbox.code(),
            "redirect_uri": REDIRECT_URI,
        },
        timeout=5,
    )
    assert resp.status_code == 200
    assert set(resp.json()) == {
        "token_type",
        "expires_in",
        "access_token",
        "refresh_token",
        "server_time",
    }
    assert resp.json()["token_type"] == "Bearer"


@responses.activate
def test_token_endpoint_5xx_and_network_errors_are_transient() -> None:
    oauth = AmoCrmOAuth(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    url = "https://acme.amocrm.ru/oauth2/access_token"
    assert oauth.token_url("acme.amocrm.ru") == url
    responses.post(url, status=502, body="<html>bad gateway</html>")
    with pytest.raises(OAuthTransient):
        oauth.refresh("acme.amocrm.ru", "rt")
    responses.replace(responses.POST, url, body=requests.ConnectionError("reset"))
    with pytest.raises(OAuthTransient):
        oauth.refresh("acme.amocrm.ru", "rt")
    responses.replace(responses.POST, url, status=401, json={"hint": "Token has been revoked"})
    with pytest.raises(OAuthRejected):
        oauth.refresh("acme.amocrm.ru", "rt")
    sent = responses.calls[0].request
    assert sent.headers["Content-Type"] == "application/json"


def test_consent_page_approve_and_deny(sandbox: Sandbox) -> None:
    page = requests.get(
        f"{sandbox.url}/oauth",
        params={"client_id": CLIENT_ID, "state": "s<1>", "mode": "popup"},
        timeout=5,
    )
    assert page.status_code == 200 and "Approve" in page.text and "s&lt;1&gt;" in page.text
    form = {"client_id": CLIENT_ID, "state": "s<1>", "account_id": str(sandbox.account_id)}
    approve = requests.post(
        f"{sandbox.url}/oauth/decision",
        data={**form, "decision": "approve"},
        allow_redirects=False,
        timeout=5,
    )
    assert approve.status_code == 302
    location = urlsplit(approve.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["referer"] == [HOST] and query["state"] == ["s<1>"]
    assert query["client_id"] == [CLIENT_ID]
    assert sandbox.oauth().exchange_code(query["referer"][0], query["code"][0])

    no_state = {k: v for k, v in form.items() if k != "state"}
    resp = requests.post(
        f"{sandbox.url}/oauth/decision",
        data={**no_state, "decision": "approve"},
        allow_redirects=False,
        timeout=5,
    )
    assert "state" not in parse_qs(urlsplit(resp.headers["Location"]).query)

    deny = requests.post(
        f"{sandbox.url}/oauth/decision",
        data={**form, "decision": "deny"},
        allow_redirects=False,
        timeout=5,
    )
    query = parse_qs(urlsplit(deny.headers["Location"]).query)
    assert query == {"error": ["access_denied"], "client_id": [CLIENT_ID], "state": ["s<1>"]}

    unknown = requests.get(f"{sandbox.url}/oauth", params={"client_id": "x"}, timeout=5)
    assert unknown.status_code == 400


def test_disable_hook_is_signed_and_revokes_tokens(sandbox: Sandbox, receiver: Receiver) -> None:
    access = sandbox.tokens()["access_token"]
    sandbox.configure(disable_hook_url=f"{receiver.url}/amo/disable")
    result = sandbox.control("POST", f"/accounts/{sandbox.account_id}/disable")
    assert result["status"] == 200
    (hit,) = receiver.received
    assert hit["method"] == "GET" and hit["path"] == "/amo/disable"
    assert hit["headers"]["User-Agent"] == "amoService-oAuth-Code-Sender/1.0"
    expected = hmac.new(
        CLIENT_SECRET.encode(), f"{CLIENT_ID}|{sandbox.account_id}".encode(), hashlib.sha256
    ).hexdigest()
    assert hit["args"] == {
        "client_uuid": CLIENT_ID,
        "account_id": str(sandbox.account_id),
        "signature": expected,
    }
    assert api_ok(sandbox, access) == 401


def test_widget_install_is_a_server_side_get_without_state(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    redirect = f"{receiver.url}/auth"
    sandbox.configure(redirect_uri=redirect)
    sandbox.control("POST", f"/accounts/{sandbox.account_id}/install_widget")
    (hit,) = receiver.received
    assert set(hit["args"]) == {"code", "referer", "from_widget", "client_id"}
    oauth = AmoCrmOAuth(CLIENT_ID, CLIENT_SECRET, redirect, api_url_override=sandbox.url)
    pair = oauth.exchange_code(hit["args"]["referer"], hit["args"]["code"])
    client = AmoCrmClient(
        sandbox.url,
        StaticTokenProvider(pair.access_token.get_secret_value()),
        throttle=IntervalThrottle(rate=1000),
    )
    assert client.get_account().id == sandbox.account_id
    assert pair.expires_at > datetime.now(UTC)


@responses.activate
@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after"),
    [
        (429, {"title": "Too Many Requests", "status": 429, "retry_after": 120}, {}, 120.0),
        (429, {"title": "Too Many Requests", "status": 429}, {"Retry-After": "7"}, 7.0),
        (408, {"title": "Request Timeout", "status": 408}, {}, None),
        # An IP ban answers the token endpoint too: a 403 is not a verdict on the grant.
        (403, {"title": "Forbidden", "status": 403}, {}, None),
    ],
)
def test_token_endpoint_rate_limit_and_timeout_are_transient(
    status: int, body: dict[str, object], headers: dict[str, str], retry_after: float | None
) -> None:
    # A rate limit is not a revoked grant: the refresh token is unspent and retrying works.
    oauth = AmoCrmOAuth(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    url = oauth.token_url("acme.amocrm.ru")
    responses.post(url, status=status, json=body, headers=headers)
    with pytest.raises(OAuthTransient) as info:
        oauth.refresh("acme.amocrm.ru", "rt")
    assert not isinstance(info.value, OAuthRejected)
    assert info.value.status == status
    assert info.value.retry_after == retry_after
