"""The widget's X-Auth-Token verification and the CORS origin rule."""

from __future__ import annotations

import time

import pytest

from shared import errors
from shared.web.cors import is_allowed_origin
from shared.web.widget_token import verify_widget_token
from tests.e2e.flows_widget import mint_widget_token

pytestmark = pytest.mark.unit


def test_a_token_like_amocrm_makes_is_accepted(isolated_env: dict[str, str]) -> None:
    claims = verify_widget_token(mint_widget_token(isolated_env, 123, subdomain="acme"))
    assert claims.account_id == 123
    assert claims.subdomain == "acme"
    assert claims.jti


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"secret": "not-the-client-secret-" + "x" * 20}, "invalid_token"),
        ({"claims": {"aud": "https://evil.example.com"}}, "invalid_token"),
        ({"claims": {"client_uuid": "another-integration"}}, "invalid_token"),
        ({"claims": {"exp": int(time.time()) - 120}}, "token_expired"),
        ({"claims": {"nbf": int(time.time()) + 600}}, "invalid_token"),
        ({"claims": {"jti": None}}, "invalid_token"),
        ({"claims": {"account_id": None}}, "invalid_token"),
        ({"claims": {"account_id": "abc"}}, "invalid_token"),
        ({"lifetime": 30 * 24 * 3600}, "invalid_token"),
        # Strict claims: one audience string, integer ids, a well-formed and consistent issuer.
        ({"claims": {"aud": ["http://127.0.0.1", "https://evil.example"]}}, "invalid_token"),
        ({"claims": {"account_id": "123"}}, "invalid_token"),
        ({"claims": {"account_id": 123.5}}, "invalid_token"),
        ({"claims": {"account_id": True}}, "invalid_token"),
        ({"claims": {"user_id": "8744098"}}, "invalid_token"),
        ({"claims": {"iss": None}}, "invalid_token"),
        ({"claims": {"iss": "http://acme.amocrm.ru"}}, "invalid_token"),
        ({"claims": {"iss": "https://acme.amocrm.ru/path"}}, "invalid_token"),
        ({"claims": {"subdomain": "other"}}, "invalid_token"),
    ],
)
def test_forged_or_stale_tokens_are_refused(
    isolated_env: dict[str, str], overrides: dict[str, object], code: str
) -> None:
    overrides = {"subdomain": "acme", **overrides}
    token = mint_widget_token(isolated_env, 123, **overrides)  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthorized) as caught:
        verify_widget_token(token)
    assert caught.value.code == code


def test_the_audience_is_the_redirect_uri_scheme_and_host(isolated_env: dict[str, str]) -> None:
    # The stack's redirect URI has a port; amoCRM signs scheme + host only (reference §6.2).
    assert ":" in isolated_env["AMOCRM_REDIRECT_URI"].split("//", 1)[1]
    claims = verify_widget_token(mint_widget_token(isolated_env, 7, subdomain="acme"))
    assert claims.issuer_host == "acme.amocrm.ru"
    with_port = isolated_env["AMOCRM_REDIRECT_URI"].rsplit("/", 1)[0]
    with pytest.raises(errors.Unauthorized):
        verify_widget_token(mint_widget_token(isolated_env, 7, claims={"aud": with_port}))


def test_small_clock_skew_is_tolerated(isolated_env: dict[str, str]) -> None:
    token = mint_widget_token(isolated_env, 1, claims={"nbf": int(time.time()) + 10})
    assert verify_widget_token(token).account_id == 1


def test_other_algorithms_are_refused(isolated_env: dict[str, str]) -> None:
    import jwt

    token = jwt.encode({"account_id": 1}, "x" * 64, algorithm="HS512")
    with pytest.raises(errors.Unauthorized):
        verify_widget_token(token)
    with pytest.raises(errors.Unauthorized):
        verify_widget_token("not.a.jwt")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://acme.amocrm.ru", True),
        ("https://acme.kommo.com", True),
        ("https://acme.amocrm.com", True),
        ("http://acme.amocrm.ru", False),
        ("https://amocrm.ru", False),
        ("https://acme.amocrm.ru.evil.com", False),
        ("https://evil-amocrm.ru", False),
        ("https://a.b.amocrm.ru", False),
        ("https://acme.amocrm.ru:8443", False),
        (None, False),
        ("null", False),
    ],
)
def test_cors_only_for_amocrm_account_origins(origin: str | None, allowed: bool) -> None:
    assert is_allowed_origin(origin, ("amocrm.ru", "amocrm.com", "kommo.com")) is allowed
