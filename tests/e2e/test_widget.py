"""The widget end to end through nginx: JWT, CORS, connect, status, disconnect."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import pytest
import requests

from devstack.stack import Stack
from testing.accounts import amo_control, create_sandbox_account
from testing.widget import (
    connect_unisender,
    create_unisender_key,
    mint_widget_token,
    unisender_state,
    wait_for,
    widget_call,
)

pytestmark = pytest.mark.e2e


def install(stack: Stack) -> int:
    """A sandbox account installed the widget way (amoCRM's server-side OAuth GET to /auth)."""
    from shared.db import get_database

    account_id = int(create_sandbox_account(stack, f"w{secrets.token_hex(5)}")["id"])
    result = amo_control(stack, "POST", f"/accounts/{account_id}/install_widget")
    assert result.get("status") == 200, result
    assert get_database().fetch_one("SELECT id FROM accounts WHERE id = %s", (account_id,))
    return account_id


def hooks(stack: Stack, account_id: int) -> list[dict[str, Any]]:
    return list(amo_control(stack, "GET", f"/accounts/{account_id}")["webhooks"])


def stored(account_id: int) -> Mapping[str, Any] | None:
    from shared.db import get_database

    return get_database().fetch_one(
        "SELECT s.api_key_enc, s.list_id, a.webhook_secret_enc FROM accounts a "
        "LEFT JOIN unisender_settings s ON s.account_id = a.id WHERE a.id = %s",
        (account_id,),
    )


def test_connect_status_reconnect_disconnect(stack: Stack, isolated_env: dict[str, str]) -> None:
    account_id = install(stack)
    connected = connect_unisender(stack, isolated_env, account_id)
    state = unisender_state(stack, connected.api_key)
    assert [lst["id"] for lst in state["lists"]] == [connected.list_id]
    assert "Name" in {f["name"] for f in state["fields"]}
    (hook,) = hooks(stack, account_id)
    assert set(hook["settings"]) == {
        "add_contact",
        "update_contact",
        "delete_contact",
        "restore_contact",
    }
    secret = hook["destination"].rsplit("/", 1)[1]
    row = stored(account_id)
    assert row is not None
    assert connected.api_key.encode() not in row["api_key_enc"]
    assert secret.encode() not in row["webhook_secret_enc"]

    status = widget_call(stack, isolated_env, account_id, "/widget/status", method="GET")
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["connected"] is True and body["list_id"] == connected.list_id
    assert body["last_sync"]["run_id"] == connected.sync_run_id
    wait_for(
        lambda: widget_call(stack, isolated_env, account_id, "/widget/status", method="GET").json()[
            "last_sync"
        ]["finished"],
        what="first full sync",
    )

    # Connecting again (e.g. the user saves the settings twice): one list, one webhook.
    again = widget_call(stack, isolated_env, account_id, data={"api_key": connected.api_key})
    assert again.status_code == 200, again.text
    assert again.json()["list_id"] == connected.list_id
    assert len(unisender_state(stack, connected.api_key)["lists"]) == 1
    assert [h["destination"] for h in hooks(stack, account_id)] == [hook["destination"]]

    gone = widget_call(stack, isolated_env, account_id, "/widget/disconnect")
    assert gone.status_code == 200, gone.text
    assert gone.json()["webhook_removed"] is True
    assert hooks(stack, account_id) == []
    after = stored(account_id)
    assert (
        after is not None and after["api_key_enc"] is None and after["webhook_secret_enc"] is None
    )
    status = widget_call(stack, isolated_env, account_id, "/widget/status", method="GET").json()
    assert status["connected"] is False
    # The old destination is dead (within the secret cache window it is still accepted but the
    # consumer drops the events; the cache is per process, so only assert the final answer).
    wait_for(
        lambda: (
            requests.post(
                hook["destination"], data={"account[id]": str(account_id)}, timeout=5
            ).status_code
            == 404
        ),
        timeout=40,
        interval=1,
        what="old webhook destination refused",
    )


def test_bad_unisender_key_is_refused_and_nothing_is_stored(
    stack: Stack, isolated_env: dict[str, str]
) -> None:
    account_id = install(stack)
    resp = widget_call(
        stack, isolated_env, account_id, data={"api_key": "wrong" + secrets.token_hex(8)}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "unisender_invalid_api_key"
    row = stored(account_id)
    assert row is not None and row["api_key_enc"] is None and row["webhook_secret_enc"] is None
    assert hooks(stack, account_id) == []
    missing = widget_call(stack, isolated_env, account_id, data={})
    assert missing.status_code == 400


def test_forged_reused_and_foreign_tokens_are_refused(
    stack: Stack, isolated_env: dict[str, str]
) -> None:
    account_id = install(stack)
    key = create_unisender_key(stack)
    forged = mint_widget_token(isolated_env, account_id, secret="forged-" + "x" * 40)
    for token in (
        forged,
        mint_widget_token(isolated_env, account_id, claims={"aud": "https://evil.example"}),
        mint_widget_token(isolated_env, account_id, claims={"client_uuid": "other"}),
        "garbage",
    ):
        resp = widget_call(stack, isolated_env, account_id, data={"api_key": key}, token=token)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] in ("invalid_token", "token_expired")
    no_token = requests.post(f"{stack.gateway_url}/widget", data={"api_key": key}, timeout=10)
    assert no_token.status_code == 401
    unknown = widget_call(stack, isolated_env, 999_999_001, data={"api_key": key})
    assert unknown.status_code == 404
    # Nothing happened in Unisender or amoCRM.
    assert unisender_state(stack, key)["lists"] == []
    assert hooks(stack, account_id) == []

    token = mint_widget_token(isolated_env, account_id)
    first = widget_call(
        stack, isolated_env, account_id, "/widget/status", method="GET", token=token
    )
    assert first.status_code == 200
    replay = widget_call(
        stack, isolated_env, account_id, "/widget/status", method="GET", token=token
    )
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "token_reused"


def test_cors_preflight_and_headers(stack: Stack, isolated_env: dict[str, str]) -> None:
    origin = "https://acme.amocrm.ru"
    for path in ("/widget", "/widget/status", "/widget/disconnect"):
        pre = requests.options(
            f"{stack.gateway_url}{path}",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-auth-token",
            },
            timeout=5,
        )
        assert pre.status_code == 204, pre.text
        assert pre.headers["Access-Control-Allow-Origin"] == origin
        assert "X-Auth-Token" in pre.headers["Access-Control-Allow-Headers"]
    evil = requests.options(
        f"{stack.gateway_url}/widget", headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
    refused = requests.post(f"{stack.gateway_url}/widget", headers={"Origin": origin}, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin  # the widget can read why
