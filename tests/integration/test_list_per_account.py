"""The old bug of issue 18 #1, written against what main already had, so it fails there.

The default list title had no account id and the list was found by title, so two amoCRM
accounts with the same name on one Unisender key both got the same list; and with any title
that two accounts share, the second adopted the first one's list.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared import widget_connect
from shared.accounts import AccountRow, get_account
from shared.db import get_database
from shared.errors import AppError
from shared.unisender_link import get_unisender_link
from tests.conftest import reset_caches
from tests.integration.test_fullsync import Sandboxes, env, servers  # noqa: F401
from tests.integration.test_tokens import install_from_widget

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def amocrm_without_ip_ban(servers: Sandboxes) -> None:  # noqa: F811
    """These tests install and connect many accounts from one IP without our client's shared
    per-IP budget (installs use their own throttle): the emulator's per-IP limit and its ban
    after repeated 429s would fail them for a reason they are not about (as in test_tokens)."""
    servers.world.config.ip_rate_limit = 0
    servers.world.config.ban_after_429s = 0


def _new_key(env: Sandboxes) -> str:  # noqa: F811
    resp = requests.post(f"{env.uni_url}/_sandbox/keys", json={}, timeout=5)
    return str(resp.json()["api_key"])


def _install(env: Sandboxes, name: str, emails: tuple[str, ...] = ()) -> AccountRow:  # noqa: F811
    rec = env.world.create_account(name=name)
    for n, email in enumerate(emails):
        env.world.apply_entity(rec, {"name": f"Person {n}", "emails": [email]})
    install_from_widget(env.world, rec)
    account = get_account(get_database(), rec.id)
    assert account is not None
    return account


def _connect(account: AccountRow, key: str) -> dict[str, Any]:
    # The widget's webhook subscription goes to the amoCRM emulator: it is part of the connect.
    return widget_connect.connect(get_database(), account, api_key=key)


def _list_ids(*accounts: AccountRow) -> list[int | None]:
    links = [get_unisender_link(get_database(), a.id) for a in accounts]
    return [link.list_id if link else None for link in links]


def test_two_accounts_with_the_same_name_on_one_key_get_two_lists(
    env: Sandboxes,  # noqa: F811
) -> None:
    key = _new_key(env)
    first, second = _install(env, "Same Shop"), _install(env, "Same Shop")
    one, two = _connect(first, key), _connect(second, key)
    assert one["list_id"] != two["list_id"]
    assert str(first.id) in one["list_title"] and str(second.id) in two["list_title"]
    assert _list_ids(first, second) == [one["list_id"], two["list_id"]]


def test_a_title_lookup_never_adopts_another_accounts_list(
    env: Sandboxes,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An operator's title without {account_id}: both accounts' titles are the same.
    monkeypatch.setenv("UNISENDER_LIST_TITLE", "amoCRM {account_name}")
    reset_caches()
    key = _new_key(env)
    first, second = _install(env, "Twin Shop"), _install(env, "Twin Shop")
    held = _connect(first, key)["list_id"]
    with pytest.raises(AppError) as refused:
        _connect(second, key)
    assert refused.value.status == 409 and refused.value.code == "list_taken"
    assert str(first.id) in refused.value.message and first.name in refused.value.message
    assert _list_ids(first, second) == [held, None]
    # The holder reconnecting keeps its list: it is bound by id, not found by title again.
    assert _connect(first, key)["list_id"] == held
