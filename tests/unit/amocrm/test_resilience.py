"""Retries, throttling hooks and error mapping of the client."""

from __future__ import annotations

import logging
import time

import pytest
import requests
import responses

from shared.amocrm import (
    AmoCrmClient,
    BadRequest,
    Blocked,
    PaymentRequired,
    RateLimited,
    StaticTokenProvider,
    Transient,
    Unauthorized,
)
from shared.ratelimit import IntervalThrottle

from .conftest import OAuthTokenProvider, Sandbox

pytestmark = pytest.mark.unit

BASE = "https://acme.amocrm.ru"


class RecordingThrottle:
    """Never blocks; remembers every call."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []

    def acquire(self) -> None:
        self.acquired += 1

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def refreshes(client: AmoCrmClient) -> int:
    assert isinstance(client._tokens, OAuthTokenProvider)
    return client._tokens.refreshes


def api_statuses(sandbox: Sandbox) -> list[object]:
    return [e["status"] for e in sandbox.requests_log()]


def test_429_from_the_rate_limit_is_waited_out(sandbox: Sandbox) -> None:
    sandbox.configure(rate_limit=3)
    pauses: list[float] = []

    class Spy(IntervalThrottle):
        def pause(self, seconds: float) -> None:
            pauses.append(seconds)
            super().pause(seconds)

    throttle = Spy(rate=1000)
    client = sandbox.client(throttle=throttle)
    started = time.monotonic()
    for _ in range(5):
        client.get_account()
    statuses = api_statuses(sandbox)
    assert statuses.count(200) == 5 and 429 in statuses
    assert pauses and all(p == 1 for p in pauses)  # the body's retry_after, not a backoff guess
    assert time.monotonic() - started >= 0.9


def test_retry_after_from_body_pauses_the_throttle(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 429, "count": 1, "retry_after": 7})
    throttle = RecordingThrottle()
    client = sandbox.client(throttle=throttle)
    assert client.get_account().id == sandbox.account_id
    assert throttle.pauses == [7]
    assert throttle.acquired == 2  # the retry went through the throttle too


def test_long_retry_after_is_handed_to_the_caller(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 429, "count": 1, "retry_after": 300})
    throttle = RecordingThrottle()
    with pytest.raises(RateLimited) as info:
        sandbox.client(throttle=throttle, max_inline_wait=60).get_account()
    assert info.value.retry_after == 300 and throttle.pauses == [300]
    assert len(api_statuses(sandbox)) == 1


def test_401_refreshes_once_then_retries(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 401, "count": 1})
    client = sandbox.client(refreshing=True)
    provider = client._tokens
    assert isinstance(provider, OAuthTokenProvider)
    before = provider.access_token()
    assert client.get_account().id == sandbox.account_id
    assert provider.refreshes == 1 and provider.access_token() != before
    assert api_statuses(sandbox) == [401, 200]


def test_expired_access_token_is_refreshed(sandbox: Sandbox) -> None:
    sandbox.configure(token_ttl=1)
    client = sandbox.client(refreshing=True)
    client.get_account()
    time.sleep(1.1)
    client.get_account()
    assert refreshes(client) == 1
    assert api_statuses(sandbox) == [200, 401, 200]


def test_second_401_is_unauthorized(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 401, "count": 2})
    client = sandbox.client(refreshing=True)
    with pytest.raises(Unauthorized):
        client.get_account()
    assert refreshes(client) == 1
    assert api_statuses(sandbox) == [401, 401]


def test_403_is_blocked_without_retry(sandbox: Sandbox) -> None:
    sandbox.control("PATCH", f"/accounts/{sandbox.account_id}", json={"blocked": True})
    throttle = RecordingThrottle()
    with pytest.raises(Blocked):
        sandbox.client(throttle=throttle).get_account()
    assert api_statuses(sandbox) == [403] and throttle.acquired == 1


def test_an_nginx_html_403_is_a_block_too(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 403, "count": 1, "html": True})
    with pytest.raises(Blocked) as info:
        sandbox.client().get_account()
    assert info.value.status == 403 and info.value.body is None


def test_5xx_is_retried_with_growing_backoff(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 503, "count": 3})
    sleeps: list[float] = []
    client = sandbox.client(sleep=sleeps.append, backoff_base=1.0)
    assert client.get_account().id == sandbox.account_id
    assert api_statuses(sandbox) == [503, 503, 503, 200]
    assert 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2 and 2 <= sleeps[2] <= 4


def test_5xx_gives_up_after_max_attempts(sandbox: Sandbox) -> None:
    sandbox.control("POST", "/faults", json={"status": 500, "count": 10})
    with pytest.raises(Transient):
        sandbox.client(max_attempts=3).get_account()
    assert api_statuses(sandbox) == [500, 500, 500]


def make_client(**kw: object) -> AmoCrmClient:
    kw.setdefault("throttle", RecordingThrottle())
    kw.setdefault("sleep", lambda _s: None)
    return AmoCrmClient(BASE, StaticTokenProvider("tok-SECRET"), **kw)  # type: ignore[arg-type]


ACCOUNT = {"id": 1, "name": "Acme", "subdomain": "acme"}


@responses.activate
def test_retry_after_header_and_capped_backoff() -> None:
    url = f"{BASE}/api/v4/account"
    responses.get(url, status=429, headers={"Retry-After": "4"}, json={"title": "Too Many"})
    responses.get(url, status=429, body="not json")
    responses.get(url, json=ACCOUNT)
    throttle = RecordingThrottle()
    make_client(throttle=throttle, backoff_base=100, backoff_cap=10).get_account()
    assert throttle.pauses[0] == 4
    # No hint: the conservative pause, never a quick backoff (429 is the warning before a ban).
    assert throttle.pauses[1] == 30


@responses.activate
def test_timeouts_and_connection_errors_retry_then_transient() -> None:
    url = f"{BASE}/api/v4/account"
    responses.get(url, body=requests.ConnectTimeout("slow"))
    responses.get(url, body=requests.ConnectionError("reset"))
    responses.get(url, json=ACCOUNT)
    throttle = RecordingThrottle()
    assert make_client(throttle=throttle).get_account().name == "Acme"
    assert throttle.acquired == 3
    responses.get(url, body=requests.ReadTimeout("slow"))
    with pytest.raises(Transient):
        make_client(max_attempts=2).get_account()


@responses.activate
def test_status_mapping() -> None:
    url = f"{BASE}/api/v4/contacts/1"
    responses.get(url, status=402, json={"title": "Payment Required", "status": 402})
    with pytest.raises(PaymentRequired):
        make_client().get_contact(1)
    responses.replace(responses.GET, url, status=400, json={"title": "Bad Request"})
    with pytest.raises(BadRequest):
        make_client().get_contact(1)
    responses.replace(responses.GET, url, status=404)
    assert make_client().get_contact(1) is None
    responses.replace(responses.GET, url, json={"id": 1, "is_deleted": True})
    assert make_client().get_contact(1) is None  # 200 with is_deleted means gone too


@responses.activate
def test_request_shape_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    responses.get(f"{BASE}/api/v4/account", json=ACCOUNT, headers={"X-Request-Id": "rid-42"})
    caplog.set_level(logging.DEBUG, logger="shared.amocrm")
    client = make_client(timeout=(3, 7))
    client.get_account()
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer tok-SECRET"
    assert sent.headers["User-Agent"].startswith("amosync/")
    assert "(+https://github.com/amosync)" in sent.headers["User-Agent"]
    assert sent.req_kwargs["timeout"] == (3, 7)  # type: ignore[attr-defined]
    assert "rid-42" in caplog.text
    assert "tok-SECRET" not in caplog.text and "tok-SECRET" not in repr(client)


@responses.activate
def test_next_link_to_another_host_is_rebased() -> None:
    first = {
        "_page": 1,
        "_links": {"next": {"href": "https://evil.example/api/v4/contacts?page=2&limit=1"}},
        "_embedded": {"contacts": [{"id": 1, "updated_at": 1}]},
    }
    responses.get(f"{BASE}/api/v4/contacts", json=first)
    responses.get(f"{BASE}/api/v4/contacts?page=2&limit=1", status=204)
    assert [c.id for c in make_client().iter_contacts(limit=1)] == [1]
    assert all(str(c.request.url).startswith(BASE) for c in responses.calls)
