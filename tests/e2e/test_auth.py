"""Install, refusals and the disable hook, end to end through nginx against the amoCRM sandbox."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from devstack.stack import Stack
from shared.crypto import get_secret_box
from shared.db import get_database
from shared.oauth_flow import disable_signature
from testing.accounts import (
    amo_control,
    approve,
    create_sandbox_account,
    install_account,
    start_auth,
    stored_account,
)
from tests.conftest import ForeignHost

pytestmark = pytest.mark.e2e


def token_calls(stack: Stack) -> list[dict[str, Any]]:
    return list(amo_control(stack, "GET", "/requests", params={"path_prefix": "/oauth2"}))


def dump_database() -> bytes:
    """Every value of every table, like a mysqldump's data section."""
    db = get_database()
    chunks: list[bytes] = []
    tables = db.fetch_all(
        "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = %s",
        (db.name,),
    )
    for table in tables:
        for row in db.fetch_all(f"SELECT * FROM `{table['t']}`"):  # noqa: S608 - catalog names
            for value in row.values():
                chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(chunks)


def test_install_stores_account_and_no_plaintext_token(
    stack: Stack, isolated_env: dict[str, str]
) -> None:
    account = install_account(stack, isolated_env, name=f"e2e-{int(time.time() * 1000)}")
    row = get_database().fetch_one(
        "SELECT * FROM oauth_tokens WHERE account_id = %s", (account.account_id,)
    )
    assert row is not None
    box = get_secret_box()
    access = box.decrypt(row["access_token_enc"]).encode()
    refresh = box.decrypt(row["refresh_token_enc"]).encode()
    dump = dump_database()
    assert access not in dump and refresh not in dump
    # The JWT's payload segment alone must not leak either.
    assert access.split(b".")[1] not in dump


def test_widget_install_through_gateway(stack: Stack, isolated_env: dict[str, str]) -> None:
    started = time.monotonic()
    account = install_account(stack, isolated_env, via="widget")
    assert time.monotonic() - started < 3
    assert account.name.startswith("acct")


def test_forged_and_reused_state_are_refused(stack: Stack, isolated_env: dict[str, str]) -> None:
    created = create_sandbox_account(stack)
    back = approve(stack, start_auth(stack, isolated_env, "reuse-me"), int(created["id"]))
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    forged = requests.get(
        f"{stack.gateway_url}/auth?{urlencode({**query, 'state': 'x' * 43})}", timeout=10
    )
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_state"
    assert requests.get(back, timeout=10).status_code == 200
    # A second code for the same redirect: the state is spent.
    code = amo_control(stack, "POST", f"/accounts/{created['id']}/code")["code"]
    reused = requests.get(
        f"{stack.gateway_url}/auth?{urlencode({**query, 'code': code})}", timeout=10
    )
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "invalid_state"


def test_foreign_referer_is_refused_and_gets_nothing(
    stack: Stack, isolated_env: dict[str, str], foreign_host: ForeignHost
) -> None:
    created = create_sandbox_account(stack)
    back = approve(stack, start_auth(stack, isolated_env, "foreign"), int(created["id"]))
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    before = len(token_calls(stack))
    for referer in (f"127.0.0.1:{foreign_host.port}", "amocrm.ru.evil.example", "evil.example"):
        resp = requests.get(
            f"{stack.gateway_url}/auth?{urlencode({**query, 'referer': referer})}", timeout=10
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "referer_not_allowed"
    assert foreign_host.hits == []
    assert len(token_calls(stack)) == before
    assert stored_account(int(created["id"])) is None


def test_access_denied_page(stack: Stack, isolated_env: dict[str, str]) -> None:
    created = create_sandbox_account(stack)
    consent = start_auth(stack, isolated_env, "denier")
    back = approve(stack, consent, int(created["id"]), decision="deny")
    resp = requests.get(back, timeout=10, headers={"Accept": "text/html"})
    assert resp.status_code == 403 and "text/html" in resp.headers["Content-Type"]
    assert "not granted" in resp.text
    assert stored_account(int(created["id"])) is None


def test_disable_hook_forged_then_genuine(stack: Stack, isolated_env: dict[str, str]) -> None:
    account = install_account(stack, isolated_env)
    params = {
        "client_uuid": isolated_env["AMOCRM_CLIENT_ID"],
        "account_id": str(account.account_id),
        "signature": disable_signature(
            "not-the-secret", isolated_env["AMOCRM_CLIENT_ID"], str(account.account_id)
        ),
    }
    forged = requests.get(f"{stack.gateway_url}/auth/disable", params=params, timeout=10)
    assert forged.status_code == 401
    row = stored_account(account.account_id)
    assert row is not None and row["status"] == "active" and row["generation"] is not None

    sent = amo_control(stack, "POST", f"/accounts/{account.account_id}/disable")
    assert sent["status"] == 200, sent
    row = stored_account(account.account_id)
    assert row is not None and row["status"] == "disabled" and row["generation"] is None


def test_name_bound_elsewhere_is_not_rebound(stack: Stack, isolated_env: dict[str, str]) -> None:
    owner = install_account(stack, isolated_env, name=f"bound-{int(time.time() * 1000)}")
    other = create_sandbox_account(stack)
    back = approve(stack, start_auth(stack, isolated_env, owner.name), int(other["id"]))
    resp = requests.get(back, timeout=10)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "name_taken"
    row = stored_account(owner.account_id)
    assert row is not None and row["name"] == owner.name
    assert stored_account(int(other["id"])) is None
