"""Pure parts of the install flow: referer check, disable-hook signature, names, pages."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import responses

from shared.amocrm.errors import RateLimited, Transient
from shared.amocrm.models import TokenPair
from shared.errors import BadRequest, Unauthorized
from shared.oauth_flow import (
    allowed_host,
    disable_signature,
    read_account,
    render_page,
    validate_name,
    verify_disable_hook,
)
from shared.settings import get_settings

pytestmark = pytest.mark.unit

ALLOWED = ("amocrm.ru", "amocrm.com", "kommo.com")


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("acme.amocrm.ru", "acme.amocrm.ru"),
        ("ACME.Kommo.com", "acme.kommo.com"),
        ("a-b-1.amocrm.com", "a-b-1.amocrm.com"),
    ],
)
def test_allowed_referers(referer: str, host: str) -> None:
    assert allowed_host(referer, ALLOWED) == host


@pytest.mark.parametrize(
    "referer",
    [
        "evil.com",
        "amocrm.ru.evil.com",
        "evilamocrm.ru",
        "127.0.0.1",
        "127.0.0.1:8080",
        "acme.amocrm.ru:8443",
        "https://acme.amocrm.ru",
        "acme.amocrm.ru/path",
        "user@acme.amocrm.ru",
        "evil.com#.amocrm.ru",
        "evil.com?.amocrm.ru",
        "evil.com\\.amocrm.ru",
        "acme .amocrm.ru",
        "-acme.amocrm.ru",
        "localhost",
        "",
        "a" * 300 + ".amocrm.ru",
    ],
)
def test_refused_referers(referer: str) -> None:
    with pytest.raises(BadRequest) as info:
        allowed_host(referer, ALLOWED)
    assert info.value.code == "referer_not_allowed"


def test_disable_signature_matches_amocrm_definition() -> None:
    expected = hmac.new(b"secret", b"client-uuid|123", hashlib.sha256).hexdigest()
    assert disable_signature("secret", "client-uuid", "123") == expected
    assert len(expected) == 64


def _hook(**override: str) -> dict[str, str]:
    s = get_settings()
    secret = s.amocrm_client_secret.get_secret_value()
    params = {
        "client_uuid": s.amocrm_client_id,
        "account_id": "29638927",
        "signature": disable_signature(secret, s.amocrm_client_id, "29638927"),
    }
    return {**params, **override}


def test_genuine_disable_hook_is_accepted() -> None:
    assert verify_disable_hook(get_settings(), _hook()) == 29638927
    upper = _hook()
    upper["signature"] = upper["signature"].upper()
    assert verify_disable_hook(get_settings(), upper) == 29638927


@pytest.mark.parametrize(
    "override",
    [
        {"signature": "0" * 64},
        {"signature": "abc"},
        {"client_uuid": "someone-else"},
        {"account_id": "29638928"},  # a signature for another account
    ],
)
def test_forged_disable_hooks_are_refused(override: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        verify_disable_hook(get_settings(), _hook(**override))


@pytest.mark.parametrize("missing", ["client_uuid", "account_id", "signature"])
def test_incomplete_disable_hook_is_a_bad_request(missing: str) -> None:
    params = _hook()
    del params[missing]
    with pytest.raises(BadRequest):
        verify_disable_hook(get_settings(), params)


def test_non_numeric_account_id_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        verify_disable_hook(get_settings(), _hook(account_id="1 OR 1=1"))


@pytest.mark.parametrize("name", ["acme", "shop-1", "my_shop.ru", "магазин"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "<script>", "x" * 101, "a/b", "a\nb"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(BadRequest):
        validate_name(name)


def test_page_escapes_everything() -> None:
    page = render_page("<b>t</b>", '<script>alert("x")</script>', ok=False)
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page


def _pair() -> TokenPair:
    body = {"token_type": "Bearer", "expires_in": 86400, "access_token": "a", "refresh_token": "r"}
    return TokenPair.from_token_response(body, now=datetime.now(UTC))


ACCOUNT_BODY = {"id": 42, "name": "Acme", "subdomain": "acme"}


def test_install_account_read_retries_only_inside_the_install_budget() -> None:
    settings = get_settings()
    url = f"{settings.amocrm_api_url}/api/v4/account"
    with responses.RequestsMock() as mock:
        mock.get(url, status=503, json={"title": "ErrInternalServer"})
        mock.get(url, json=ACCOUNT_BODY)
        account = read_account(settings, "acme.amocrm.ru", _pair(), deadline=time.monotonic() + 60)
        assert account.id == 42 and len(mock.calls) == 2
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(url, status=503, json={"title": "ErrInternalServer"})
        mock.get(url, json=ACCOUNT_BODY)
        # Too little of the budget left for another full request: no retry.
        with pytest.raises(Transient):
            read_account(settings, "acme.amocrm.ru", _pair(), deadline=time.monotonic() + 5)
        assert len(mock.calls) == 1


def test_install_never_waits_out_a_long_rate_limit() -> None:
    settings = get_settings()
    with responses.RequestsMock() as mock:
        mock.get(
            f"{settings.amocrm_api_url}/api/v4/account",
            status=429,
            json={"title": "Too Many Requests", "retry_after": 60},
        )
        started = time.monotonic()
        with pytest.raises(RateLimited):
            read_account(settings, "acme.amocrm.ru", _pair())
        assert time.monotonic() - started < 3
