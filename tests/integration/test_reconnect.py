"""Reconnecting the widget with another Unisender key or list: the new list gets everything."""

from __future__ import annotations

import pytest
import requests

from shared.db import get_database
from shared.unisender.client import UnisenderClient
from shared.unisender_link import save_unisender_link
from tests.integration.test_fullsync import (  # noqa: F401
    Connected,
    Sandboxes,
    connect,
    env,
    run_sync,
    servers,
)

pytestmark = pytest.mark.integration


def _members(account_id: int) -> int:
    row = get_database().fetch_one(
        "SELECT COUNT(*) AS n FROM list_members WHERE account_id = %s", (account_id,)
    )
    return int(row["n"]) if row else 0


def test_a_new_key_gets_every_address_on_its_first_full_sync(env: Sandboxes) -> None:  # noqa: F811
    first = connect(env, contacts=3)
    run_sync(first.account_id)
    assert len(first.list_emails()) == 3 and _members(first.account_id) == 3

    key = requests.post(f"{env.uni_url}/_sandbox/keys", json={}, timeout=5).json()["api_key"]
    uni = UnisenderClient(key, base_url=f"{env.uni_url}/en/api")
    list_id = uni.ensure_list(f"amoCRM {first.account_id}")
    save_unisender_link(
        get_database(), first.account_id, api_key=key, list_id=list_id, list_title="t"
    )
    assert _members(first.account_id) == 0  # forgotten with the old key, in one transaction
    second = Connected(first.account_id, key, list_id, uni)
    run_sync(second.account_id)
    assert second.list_emails() == first.list_emails()


def test_saving_the_same_key_and_list_keeps_what_we_know(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env, contacts=2)
    run_sync(acc.account_id)
    save_unisender_link(
        get_database(), acc.account_id, api_key=acc.api_key, list_id=acc.list_id, list_title="t"
    )
    assert _members(acc.account_id) == 2


def test_another_list_of_the_same_key_gets_every_address(env: Sandboxes) -> None:  # noqa: F811
    acc = connect(env, contacts=2)
    run_sync(acc.account_id)
    other = acc.uni.create_list(f"other {acc.account_id}")
    save_unisender_link(
        get_database(), acc.account_id, api_key=acc.api_key, list_id=other, list_title="t"
    )
    run_sync(acc.account_id)
    moved = Connected(acc.account_id, acc.api_key, other, acc.uni)
    assert len(moved.list_emails()) == 2
