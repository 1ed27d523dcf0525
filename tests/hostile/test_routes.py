"""Every route through the gateway with hostile query strings, bodies, credentials and JWTs.

Always a 4xx with the JSON error shape (or a success), never a 5xx; a refused request stores
nothing; no response carries a token, key or secret.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import (
    INJECTIONS,
    Target,
    changed,
    check_response,
    quiesce,
    snapshot,
    widget_claims,
    widget_token_calls,
)

pytestmark = [pytest.mark.hostile, pytest.mark.e2e]

SETTINGS = settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ROUTES = [
    "/auth",
    "/auth/disable",
    "/widget",
    "/widget/status",
    "/widget/disconnect",
    "/contacts",
    "/contact",
    "/sync",
    "/sync/status",
    "/status",
]
text = st.text(
    st.characters(blacklist_categories=("Cs", "Nd", "No"), whitelist_characters="0123456789"),
    max_size=40,
)
param_values = st.one_of(
    text,
    st.sampled_from(INJECTIONS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "1", "0", "-1", "true", "x.amocrm.ru", "evil.example", "a@b.c"]),
)
param_names = st.one_of(
    st.sampled_from(
        [
            "name",
            "email",
            "account_id",
            "run_id",
            "limit",
            "cursor",
            "state",
            "referer",
            "error",
            "rebind",
            "client_uuid",
            "signature",
            "api_key",
            "email_types",
        ]
    ),
    text,
)


def _db() -> Any:
    from shared.db import get_database

    return get_database()


def _credentials(target: Target, kind: str) -> dict[str, str]:
    if kind == "admin":
        return target.admin()
    if kind == "wrong-bearer":
        return {"Authorization": "Bearer " + "x" * 32}
    if kind == "basic-wrong":
        return {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    if kind == "garbage-jwt":
        return {"X-Auth-Token": "eyJ.garbage.token"}
    return {}


def _request(
    target: Target,
    method: str,
    route: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes | None,
) -> requests.Response:
    return requests.request(
        method,
        target.url + route,
        params=params,
        data=body,
        headers={"Accept": "application/json", **headers},
        timeout=30,
        allow_redirects=False,
    )


@SETTINGS
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    params=st.lists(st.tuples(param_names, param_values), max_size=6),
    credentials=st.sampled_from(["none", "admin", "wrong-bearer", "basic-wrong", "garbage-jwt"]),
    body=st.one_of(
        st.none(),
        st.binary(max_size=300),
        st.dictionaries(param_names, param_values, max_size=4).map(
            lambda d: json.dumps(d).encode()
        ),
    ),
)
def test_every_route_refuses_hostile_requests_cleanly(
    target: Target,
    route: str,
    method: str,
    params: list[tuple[str, str]],
    credentials: str,
    body: bytes | None,
) -> None:
    quiesce()
    before = snapshot(_db())
    resp = _request(target, method, route, params, _credentials(target, credentials), body)
    where = f"{method} {route} {params!r} as {credentials}"
    if route == "/status" and resp.status_code == 401:
        # The status page is for browsers: its 401 asks for Basic credentials (by design).
        assert "Basic" in resp.headers.get("WWW-Authenticate", ""), where
        resp_ok = True
    else:
        check_response(target, resp, where=where)
        resp_ok = False
    if resp.status_code >= 400 or resp_ok:
        assert changed(before, snapshot(_db())) == {}, f"{where} was refused but stored something"


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_strings_in_names_and_emails(target: Target, value: str) -> None:
    quiesce()
    before = snapshot(_db())
    calls = [
        ("GET", "/auth", [("name", value)], {}),
        ("GET", "/contacts", [("name", value)], target.admin()),
        ("GET", "/contact", [("email", value), ("name", target.account_name)], target.admin()),
        ("GET", "/contact", [("email", value + "@example.com")], target.admin()),
        ("GET", "/sync/status", [("name", value)], target.admin()),
        ("POST", "/sync", [("name", value)], target.admin()),
    ]
    for method, route, params, headers in calls:
        resp = _request(target, method, route, params, headers, None)
        check_response(target, resp, where=f"{method} {route} {params!r}")
        if route == "/auth" and resp.status_code == 302:
            # A valid-looking name starts an OAuth round trip (an oauth_states row), by design.
            assert urlsplit(resp.headers["Location"]).path.endswith("/oauth")
            before = snapshot(_db())
    assert changed(before, snapshot(_db())) == {}
    # The tables are still there and still answer.
    assert _db().fetch_one("SELECT COUNT(*) AS n FROM accounts")["n"] >= 1


def _claims(target: Target, **overrides: Any) -> dict[str, Any]:
    return widget_claims(target, **overrides)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
claim_names = st.sampled_from(
    ["aud", "jti", "iat", "nbf", "exp", "account_id", "user_id", "subdomain", "client_uuid"]
)


@SETTINGS
@given(
    mutations=st.dictionaries(claim_names, json_values, min_size=1, max_size=3),
    key=st.sampled_from(["client-secret", "wrong-secret", "none-alg", "hs512"]),
)
def test_forged_and_malformed_widget_tokens(
    target: Target, mutations: dict[str, Any], key: str
) -> None:
    claims = _claims(target, **mutations)
    secret = target.env["AMOCRM_CLIENT_SECRET"]
    if key == "none-alg":
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{header}.{payload}."
    else:
        try:
            token = jwt.encode(
                claims,
                "not-the-secret-at-all-0123456789" if key == "wrong-secret" else secret,
                algorithm="HS512" if key == "hs512" else "HS256",
            )
        except (TypeError, ValueError):
            return  # not even encodable: nothing to send
    quiesce()
    before = snapshot(_db())
    resp = requests.get(f"{target.url}/widget/status", headers={"X-Auth-Token": token}, timeout=15)
    check_response(target, resp, where=f"widget token {key} {mutations!r}")
    if key != "client-secret":
        assert resp.status_code == 401, resp.text
    if resp.status_code >= 400:
        assert changed(before, snapshot(_db())) == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 3600, "nbf": int(time.time()) - 7200},
        {"aud": "https://evil.example"},
        {"client_uuid": str(uuid.uuid4())},
        {"nbf": int(time.time()) + 3600, "exp": int(time.time()) + 5400},
        {"exp": int(time.time()) + 30 * 24 * 3600},
        {"account_id": 0},
        {"account_id": "1; DROP TABLE accounts"},
        {"jti": ""},
    ],
    ids=[
        "expired",
        "wrong-audience",
        "wrong-integration",
        "not-yet",
        "too-long",
        "zero",
        "sqli",
        "no-jti",
    ],
)
def test_widget_tokens_amocrm_would_never_send(target: Target, overrides: dict[str, Any]) -> None:
    token = jwt.encode(
        _claims(target, **overrides), target.env["AMOCRM_CLIENT_SECRET"], algorithm="HS256"
    )
    quiesce()
    before = snapshot(_db())
    for route, resp in widget_token_calls(target, token):
        check_response(target, resp, where=f"{route} {overrides}")
        assert resp.status_code == 401, (route, resp.text)
    assert changed(before, snapshot(_db())) == {}


def test_a_replayed_widget_token_is_refused(target: Target) -> None:
    token = jwt.encode(_claims(target), target.env["AMOCRM_CLIENT_SECRET"], algorithm="HS256")
    first = requests.get(f"{target.url}/widget/status", headers={"X-Auth-Token": token}, timeout=15)
    assert first.status_code == 200, first.text
    check_response(target, first, where="widget status")
    again = requests.get(f"{target.url}/widget/status", headers={"X-Auth-Token": token}, timeout=15)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "token_reused"


def test_oversized_requests(target: Target) -> None:
    big = requests.post(f"{target.url}/widget", data=b"a" * (3 * 1024 * 1024), timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    headers = requests.get(f"{target.url}/contacts", headers={"X-Junk": "a" * 20000}, timeout=15)
    assert headers.status_code == 400 and headers.json()["error"]["code"] == "headers_too_large"
    # Past nginx's 8 KiB request line: nginx's own 414 page (no function sees it; SECURITY.md).
    uri = requests.get(f"{target.url}/contacts", params={"name": "a" * 9000}, timeout=15)
    assert uri.status_code == 414
    # Just under it: the function answers, with its JSON shape.
    long_name = requests.get(
        f"{target.url}/contacts", params={"name": "a" * 6000}, headers=target.admin(), timeout=15
    )
    check_response(target, long_name, where="a 6000-character name")
    assert long_name.status_code == 400
