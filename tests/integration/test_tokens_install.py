"""/auth and /auth/disable loaded the way functions-framework loads them, against real MySQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import functions_framework
import pytest
import requests
import responses

from shared.accounts import get_account, get_account_by_name
from shared.crypto import get_secret_box, sha256_hex
from shared.db import Database
from shared.oauth_flow import disable_signature
from shared.settings import get_settings
from shared.tokens import load_tokens
from testing.caches import reset_caches
from tests.conftest import ForeignHost
from tests.integration.test_tokens import AmoSandbox, amo, amo_server  # noqa: F401

pytestmark = pytest.mark.integration

SOURCE = str(Path(__file__).resolve().parents[2] / "functions" / "auth" / "main.py")


@pytest.fixture
def client(amo: AmoSandbox) -> Any:  # noqa: F811
    return functions_framework.create_app("auth", SOURCE).test_client()


def start(client: Any, name: str, **headers: str) -> str:
    """GET /auth?name=… and return the state from the 302 Location."""
    resp = client.get(f"/auth?name={name}", headers=headers)
    assert resp.status_code == 302, resp.data
    return parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]


def consent(sandbox: AmoSandbox, state: str, account_id: int) -> dict[str, str]:
    """Approve on the sandbox consent page; returns the redirect's query parameters."""
    page = requests.get(
        f"{sandbox.url}/oauth",
        params={"client_id": get_settings().amocrm_client_id, "state": state, "mode": "x"},
        timeout=5,
    )
    assert page.status_code == 200 and "Approve" in page.text
    resp = requests.post(
        f"{sandbox.url}/oauth/decision",
        data={
            "client_id": get_settings().amocrm_client_id,
            "state": state,
            "decision": "approve",
            "account_id": str(account_id),
        },
        allow_redirects=False,
        timeout=5,
    )
    assert resp.status_code == 302
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}


def callback(client: Any, params: dict[str, str], **headers: str) -> Any:
    return client.get("/auth", query_string=params, headers=headers)


def test_start_redirects_to_consent_with_hashed_single_use_state(client: Any, db: Database) -> None:
    resp = client.get("/auth?name=acme")
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert location.geturl().startswith(get_settings().amocrm_auth_url)
    query = parse_qs(location.query)
    assert query["client_id"] == [get_settings().amocrm_client_id]
    assert query["mode"] == ["post_message"]
    state = query["state"][0]
    assert len(state) >= 32
    row = db.fetch_one("SELECT * FROM oauth_states WHERE state_hash = %s", (sha256_hex(state),))
    assert row is not None and row["name"] == "acme" and row["used_at"] is None
    assert db.fetch_one("SELECT 1 AS x FROM oauth_states WHERE state_hash = %s", (state,)) is None


def test_browser_install_stores_account_and_state_cannot_be_reused(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account()
    state = start(client, "shop-one")
    params = consent(amo, state, account_id)
    resp = callback(client, params)
    assert resp.status_code == 200, resp.data
    page = resp.data.decode()
    assert "shop-one" in page and str(account_id) in page and resp.mimetype == "text/html"
    account = get_account_by_name(db, "shop-one")
    assert account is not None and account.id == account_id and account.status == "active"
    assert account.host == amo.world.account(account_id).host
    assert load_tokens(db, account_id) is not None
    # The same redirect again (a replayed URL): the state is spent.
    again = callback(client, {**params, "code": amo.code(account_id)})
    assert again.status_code == 400
    assert again.json["error"]["code"] == "invalid_state"


def test_forged_state_is_refused_before_any_token_call(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
) -> None:
    account_id = amo.new_account()
    calls = len(amo.token_calls())
    params = {
        "code": amo.code(account_id),
        "state": "forged-state-value",
        "referer": amo.world.account(account_id).host,
    }
    resp = callback(client, params)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_state"
    assert len(amo.token_calls()) == calls


def test_expired_state_is_refused(client: Any, amo: AmoSandbox, db: Database) -> None:  # noqa: F811
    account_id = amo.new_account()
    state = start(client, "late")
    db.execute(
        "UPDATE oauth_states SET expires_at = created_at WHERE state_hash = %s",
        (sha256_hex(state),),
    )
    resp = callback(client, consent(amo, state, account_id))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_state"


@pytest.mark.parametrize(
    "referer",
    ["127.0.0.1:{port}", "localhost:{port}", "evil.example", "amocrm.ru.evil.example"],
)
def test_foreign_referer_gets_nothing(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    foreign_host: ForeignHost,
    monkeypatch: pytest.MonkeyPatch,
    referer: str,
) -> None:
    # Without AMOCRM_API_URL the token call would go to the referer itself.
    monkeypatch.delenv("AMOCRM_API_URL")
    reset_caches()
    account_id = amo.new_account()
    state = start(client, "victim")
    params = consent(amo, state, account_id)
    calls = len(amo.token_calls())
    resp = callback(client, {**params, "referer": referer.format(port=foreign_host.port)})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "referer_not_allowed"
    assert foreign_host.hits == []
    assert len(amo.token_calls()) == calls


@responses.activate
def test_without_override_token_call_goes_to_the_account_host(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AMOCRM_API_URL")
    reset_caches()
    state = start(client, "real-host")
    responses.post(
        "https://realhost.kommo.com/oauth2/access_token",
        json={
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token": "at-1",
            "refresh_token": "rt-1",
        },
    )
    responses.get(
        "https://realhost.kommo.com/api/v4/account",
        json={"id": 777000111, "name": "Real", "subdomain": "realhost"},
    )
    resp = callback(client, {"code": "c0de", "state": state, "referer": "realhost.kommo.com"})
    assert resp.status_code == 200, resp.data
    token_call = responses.calls[0].request
    body = json.loads(token_call.body or b"{}")
    assert body["client_secret"] == get_settings().amocrm_client_secret.get_secret_value()
    assert body["grant_type"] == "authorization_code" and body["code"] == "c0de"
    assert responses.calls[1].request.headers["Authorization"] == "Bearer at-1"
    account = get_account(db, 777000111)
    assert account is not None and account.host == "realhost.kommo.com"


def test_access_denied_gets_a_page(client: Any, amo: AmoSandbox, db: Database) -> None:  # noqa: F811
    state = start(client, "denied")
    resp = callback(client, {"error": "access_denied", "state": state, "client_id": "x"})
    assert resp.status_code == 403 and resp.mimetype == "text/html"
    assert "not granted" in resp.data.decode()
    assert get_account_by_name(db, "denied") is None


@pytest.mark.parametrize("query", ["", "?foo=bar", "?code=abc", "?code=abc&state=s", "?name="])
def test_missing_parameters_are_json_400(client: Any, query: str) -> None:
    resp = client.get(f"/auth{query}")
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "missing_parameter"


def test_browser_gets_error_page_instead_of_json(client: Any) -> None:
    resp = client.get("/auth?name=<bad>", headers={"Accept": "text/html,*/*;q=0.8"})
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    assert "<bad>" not in resp.data.decode()


def test_widget_install_is_fast_and_derives_name(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account("widgetshop")
    params = {
        "code": amo.code(account_id),
        "referer": "widgetshop.amocrm.ru",
        "from_widget": "1",
        "client_id": get_settings().amocrm_client_id,
    }
    started = time.monotonic()
    resp = callback(client, params)
    assert time.monotonic() - started < 3
    assert resp.status_code == 200 and resp.json["account_id"] == account_id
    account = get_account(db, account_id)
    assert account is not None and account.name == "widgetshop"


def test_widget_install_name_clash_gets_suffix(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account("clash")
    db.execute(
        "INSERT INTO accounts (id, name, host) VALUES (%s, 'clash', 'other.amocrm.ru')",
        (account_id + 1,),
    )
    resp = callback(
        client, {"code": amo.code(account_id), "referer": "clash.amocrm.ru", "from_widget": "1"}
    )
    assert resp.status_code == 200
    account = get_account(db, account_id)
    assert account is not None and account.name == f"clash-{account_id}"


def test_name_of_another_account_needs_admin_rebind(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    owner, intruder = amo.new_account(), amo.new_account()
    callback(client, consent(amo, start(client, "taken"), owner))
    resp = callback(client, consent(amo, start(client, "taken"), intruder))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "name_taken"
    assert get_account(db, intruder) is None
    held = get_account_by_name(db, "taken")
    assert held is not None and held.id == owner

    assert client.get("/auth?name=taken&rebind=1").status_code == 401
    admin = {"Authorization": f"Bearer {get_settings().admin_token.get_secret_value()}"}
    resp = callback(client, consent(amo, start(client, "taken&rebind=1", **admin), intruder))
    assert resp.status_code == 200, resp.data
    moved = get_account_by_name(db, "taken")
    assert moved is not None and moved.id == intruder
    old = get_account(db, owner)
    assert old is not None and old.name == f"taken-{owner}" and old.status == "active"


def test_reauthorizing_updates_tokens_and_reactivates(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account()
    callback(client, consent(amo, start(client, "again"), account_id))
    before = load_tokens(db, account_id)
    db.execute("UPDATE accounts SET status = 'reauth_required' WHERE id = %s", (account_id,))
    resp = callback(client, consent(amo, start(client, "again"), account_id))
    assert resp.status_code == 200
    after = load_tokens(db, account_id)
    assert before is not None and after is not None
    assert after.generation == before.generation + 1
    assert after.access_token != before.access_token
    account = get_account(db, account_id)
    assert account is not None and account.status == "active" and account.name == "again"


def _hook(account_id: int, secret: str | None = None) -> dict[str, str]:
    s = get_settings()
    key = secret or s.amocrm_client_secret.get_secret_value()
    return {
        "client_uuid": s.amocrm_client_id,
        "account_id": str(account_id),
        "signature": disable_signature(key, s.amocrm_client_id, str(account_id)),
    }


def test_disable_hook(client: Any, amo: AmoSandbox, db: Database) -> None:  # noqa: F811
    account_id = amo.new_account()
    callback(client, consent(amo, start(client, "to-disable"), account_id))
    db.execute(
        "INSERT INTO unisender_settings (account_id, api_key_enc) VALUES (%s, %s)",
        (account_id, get_secret_box().encrypt("uni-key")),
    )
    forged = client.get("/auth/disable", query_string=_hook(account_id, secret="wrong"))
    assert forged.status_code == 401
    account = get_account(db, account_id)
    assert account is not None and account.status == "active"
    assert load_tokens(db, account_id) is not None

    resp = client.get("/auth/disable", query_string=_hook(account_id))
    assert resp.status_code == 200 and resp.json["known"] is True
    account = get_account(db, account_id)
    assert account is not None and account.status == "disabled"
    assert load_tokens(db, account_id) is None
    link = db.fetch_one(
        "SELECT 1 AS x FROM unisender_settings WHERE account_id = %s", (account_id,)
    )
    assert link is not None


@pytest.mark.parametrize("flow", ["widget", "browser"])
@pytest.mark.parametrize("code", ["not-a-code", "expired"])
def test_a_rejected_authorization_code_is_the_callers_400(
    client: Any,
    amo: AmoSandbox,  # noqa: F811
    db: Database,
    flow: str,
    code: str,
) -> None:
    account_id = amo.new_account()
    host = amo.world.account(account_id).host
    if code == "expired":
        # A real code, already spent once: amoCRM refuses it like an expired one.
        code = amo.code(account_id)
        assert (
            callback(client, {"code": code, "referer": host, "from_widget": "1"}).status_code == 200
        )
        db.execute("DELETE FROM accounts WHERE id = %s", (account_id,))
    params = {"code": code, "referer": host}
    if flow == "widget":
        params["from_widget"] = "1"
    else:
        params["state"] = start(client, f"rejected-{account_id}")
    resp = callback(client, params)
    assert resp.status_code == 400, resp.data
    assert resp.mimetype == "application/json"
    assert resp.json["error"]["code"] == "code_rejected"
    assert get_account(db, account_id) is None
    # A browser gets the same answer as a page.
    if flow == "widget":
        page = callback(client, params, Accept="text/html")
        assert page.status_code == 400 and page.mimetype == "text/html"
