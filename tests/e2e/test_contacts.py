"""/contacts and /contact through nginx: credentials, paging, sync state, Unisender's view."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
import requests

from devstack.stack import Stack
from testing.caches import reset_caches
from testing.sync import (
    SyncAccount,
    admin,
    amo_control,
    install_connected_account,
    seed_contacts,
    start_sync,
    wait_run,
)
from testing.widget import mint_widget_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def accounts(stack: Stack, base_env: dict[str, str]) -> Iterator[tuple[SyncAccount, SyncAccount]]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in base_env.items():
            patch.setenv(key, value)
        reset_caches()
        yield _connected_pair(stack, base_env)
    reset_caches()


def _connected_pair(stack: Stack, base_env: dict[str, str]) -> tuple[SyncAccount, SyncAccount]:
    mine = install_connected_account(stack, base_env)
    other = install_connected_account(stack, base_env)
    seed_contacts(stack, mine.account_id, 5)
    amo_control(
        stack,
        "POST",
        f"/accounts/{mine.account_id}/changes",
        json={
            "notify": False,
            "add": [
                {
                    "name": "Ivan Petrov",
                    "emails": [
                        {"value": " Ivan@Example.COM ", "enum_code": "WORK"},
                        {"value": "ivan@home.example", "enum_code": "PRIV"},
                    ],
                    "phones": ["+79991234567"],
                }
            ],
        },
    )
    assert (
        wait_run(stack, base_env, start_sync(stack, base_env, mine.name)["run_id"])["status"]
        == "done"
    )
    return mine, other


def get(stack: Stack, path: str, headers: Mapping[str, str] | None = None, **params: object):  # type: ignore[no-untyped-def]
    return requests.get(f"{stack.gateway_url}{path}", params=params, headers=headers, timeout=15)


def widget(env: Mapping[str, str], account: SyncAccount) -> dict[str, str]:
    return {"X-Auth-Token": mint_widget_token(env, account.account_id)}


@pytest.mark.parametrize("path", ["/contacts", "/contact"])
def test_missing_wrong_or_foreign_credentials_are_refused(
    stack: Stack, isolated_env: dict[str, str], accounts: tuple[SyncAccount, SyncAccount], path: str
) -> None:
    mine, other = accounts
    params = {"name": mine.name, "email": "ivan@example.com"}
    assert get(stack, path, **params).status_code == 401
    assert get(stack, path, {"Authorization": "Bearer wrong"}, **params).status_code == 401
    # Basic credentials are only for the status page.
    basic = requests.get(
        f"{stack.gateway_url}{path}",
        params=params,
        auth=("admin", isolated_env["ADMIN_TOKEN"]),
        timeout=5,
    )
    assert basic.status_code == 401
    forged = {"X-Auth-Token": mint_widget_token(isolated_env, mine.account_id, secret="x" * 32)}
    assert get(stack, path, forged, **params).status_code == 401
    foreign = get(stack, path, widget(isolated_env, other), **params)
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "foreign_account"
    foreign_id = get(
        stack, path, widget(isolated_env, other), account_id=mine.account_id, email=params["email"]
    )
    assert foreign_id.status_code == 403
    assert "ivan" not in foreign.text.lower()


def test_contacts_page_with_emails_phones_and_sync_state(
    stack: Stack, isolated_env: dict[str, str], accounts: tuple[SyncAccount, SyncAccount]
) -> None:
    mine, _ = accounts
    first = get(stack, "/contacts", admin(isolated_env), name=mine.name, limit=4)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["account"] == {"id": mine.account_id, "name": mine.name}
    assert (body["page"], body["limit"], body["count"], body["next_cursor"]) == (1, 4, 4, 2)
    assert body["next"].startswith("/contacts?") and "cursor=2" in body["next"]
    second = get(stack, body["next"], admin(isolated_env)).json()
    assert (second["page"], second["count"], second["next_cursor"], second["next"]) == (
        2,
        2,
        None,
        None,
    )
    ivan = next(c for c in second["contacts"] if c["name"] == "Ivan Petrov")
    assert ivan["emails"] == [
        {"value": " Ivan@Example.COM ", "type": "WORK", "syncs": True},
        {"value": "ivan@home.example", "type": "PRIV", "syncs": True},
    ]
    assert ivan["phones"] == [{"value": "+79991234567", "type": "WORK"}]
    assert ivan["sync"]["known"] and ivan["sync"]["up_to_date"]
    assert {e["email"]: e["state"] for e in ivan["sync"]["emails"]} == {
        "ivan@example.com": "member",
        "ivan@home.example": "member",
    }
    ids = [c["id"] for c in body["contacts"] + second["contacts"]]
    assert len(ids) == len(set(ids)) == 6
    # The widget of the same account may read it too, by its token alone.
    own = get(stack, "/contacts", widget(isolated_env, mine), limit=1)
    assert own.status_code == 200 and own.json()["account"]["id"] == mine.account_id


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "0"}, 400),
        ({"limit": "251"}, 400),
        ({"limit": "ten"}, 400),
        ({"cursor": "0"}, 400),
        ({"cursor": "-3"}, 400),
        ({"account_id": "abc"}, 400),
    ],
)
def test_contacts_bad_input_is_400_json(
    stack: Stack,
    isolated_env: dict[str, str],
    accounts: tuple[SyncAccount, SyncAccount],
    params: dict[str, str],
    code: int,
) -> None:
    mine, _ = accounts
    resp = get(stack, "/contacts", admin(isolated_env), **{"name": mine.name, **params})
    assert resp.status_code == code
    assert resp.json()["error"]["code"] in ("invalid_parameter", "bad_request")


def test_contacts_unknown_account_and_missing_name(
    stack: Stack, isolated_env: dict[str, str], accounts: tuple[SyncAccount, SyncAccount]
) -> None:
    assert get(stack, "/contacts", admin(isolated_env), name="nobody-here").status_code == 404
    missing = get(stack, "/contacts", admin(isolated_env))
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_parameter"


def test_contact_shows_unisender_view_and_our_state(
    stack: Stack, isolated_env: dict[str, str], accounts: tuple[SyncAccount, SyncAccount]
) -> None:
    mine, other = accounts
    resp = get(stack, "/contact", admin(isolated_env), name=mine.name, email=" IVAN@example.com")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["email"] == "ivan@example.com"
    assert body["unisender"]["in_account_list"] is True
    assert [lst["id"] for lst in body["unisender"]["lists"]] == [mine.list_id]
    assert body["unisender"]["fields"].get("Name") == "Ivan Petrov"
    assert body["sync"]["member"]["state"] == "member"
    assert [c["name"] for c in body["sync"]["contacts"]] == ["Ivan Petrov"]
    # The other account's key does not know Ivan: its own view is a 404, never ours.
    theirs = get(stack, "/contact", admin(isolated_env), name=other.name, email="ivan@example.com")
    assert theirs.status_code == 404
    own = get(stack, "/contact", widget(isolated_env, mine), email="ivan@home.example")
    assert own.status_code == 200 and own.json()["sync"]["member"]["state"] == "member"
    unknown = get(
        stack, "/contact", admin(isolated_env), name=mine.name, email="who@nowhere.example"
    )
    assert unknown.status_code == 404
    bad = get(stack, "/contact", admin(isolated_env), name=mine.name, email="not-an-email")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"
    assert get(stack, "/contact", admin(isolated_env), name=mine.name).status_code == 400


def test_widget_origin_gets_cors_and_others_do_not(
    stack: Stack, isolated_env: dict[str, str], accounts: tuple[SyncAccount, SyncAccount]
) -> None:
    mine, _ = accounts
    origin = "https://acme.amocrm.ru"
    for path in ("/contacts", "/contact", "/sync", "/sync/status"):
        pre = requests.options(
            f"{stack.gateway_url}{path}",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            timeout=5,
        )
        assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == origin
        evil = requests.options(
            f"{stack.gateway_url}{path}", headers={"Origin": "https://evil.example"}, timeout=5
        )
        assert evil.status_code == 403 and "Access-Control-Allow-Origin" not in evil.headers
    resp = get(stack, "/contacts", {**widget(isolated_env, mine), "Origin": origin}, limit=1)
    assert resp.status_code == 200 and resp.headers["Access-Control-Allow-Origin"] == origin
    refused = get(stack, "/contacts", {"Origin": origin}, name=mine.name)
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == origin
