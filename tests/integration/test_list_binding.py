"""One Unisender list per account, always (issue 18 #1), against real MySQL and both emulators.

The old bug: the default title had no account id and the list was found by title, so two
amoCRM accounts with the same name on one Unisender key both got the same list.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import widget_connect
from shared.accounts import AccountRow
from shared.consumers.contact_events import ListShared, apply_account_events
from shared.db import get_database
from shared.errors import ListTaken
from shared.jobs import ContactEvent, ContactEventsJob
from shared.list_binding import key_fingerprint, shared_lists
from shared.unisender.client import UnisenderClient
from shared.unisender_link import list_title_for
from tests.conftest import reset_caches
from tests.integration.test_fullsync import (  # noqa: F401
    Connected,
    Sandboxes,
    env,
    run_sync,
    servers,
)
from tests.integration.test_list_per_account import (  # noqa: F401
    _connect,
    _install,
    _list_ids,
    _new_key,
    amocrm_without_ip_ban,
)

pytestmark = pytest.mark.integration


def test_a_bound_list_survives_a_title_change(
    env: Sandboxes,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _new_key(env)
    account = _install(env, "Renamed Shop")
    held = _connect(account, key)["list_id"]
    monkeypatch.setenv("UNISENDER_LIST_TITLE", "Newsletter {account_id}")
    reset_caches()
    assert _connect(account, key)["list_id"] == held


def test_the_account_id_survives_a_long_name() -> None:
    title = list_title_for(account_id=31337, account_name="n" * 400)
    assert len(title) <= 255 and title.endswith("(31337)")


@pytest.mark.parametrize("name", ["", "\r", " \t\n ", "\x00\x1f"])
def test_a_blank_name_never_makes_a_blank_title(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISENDER_LIST_TITLE", "{account_name}")
    reset_caches()
    assert list_title_for(account_id=42, account_name=name) == "42"
    assert list_title_for(account_id=42, account_name="a\r\nb") == "a b"


_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=300,
)
_TEMPLATES = st.sampled_from(
    ["amoCRM {account_name} ({account_id})", "amoCRM {account_name}", "{account_name}", "list"]
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name_a=_NAMES, name_b=_NAMES, same_name=st.booleans(), template=_TEMPLATES)
def test_any_two_accounts_any_names_one_key_never_share_a_list(
    env: Sandboxes,  # noqa: F811
    name_a: str,
    name_b: str,
    same_name: bool,
    template: str,
) -> None:
    import os

    os.environ["UNISENDER_LIST_TITLE"] = template  # restored by the autouse env fixture
    reset_caches()
    key = _new_key(env)
    accounts = [_install(env, name_a), _install(env, name_a if same_name else name_b)]
    for account in accounts:
        with contextlib.suppress(ListTaken):  # refused, never shared
            _connect(account, key)
    ids = [i for i in _list_ids(*accounts) if i is not None]
    assert len(ids) == len(set(ids)), f"shared list {ids}"
    assert ids, "the first account always gets a list"
    if "{account_id}" in template:
        assert len(ids) == 2, "with the account id in the title both accounts get a list"


def _legacy_share(holder: Connected, account: AccountRow) -> None:
    """What a deployment before bindings could hold: a second link to the same list."""
    from shared.crypto import get_secret_box

    get_database().execute(
        "INSERT INTO unisender_settings (account_id, api_key_enc, key_fingerprint, list_id, "
        "list_title) VALUES (%s, %s, %s, %s, 'shared')",
        (
            account.id,
            get_secret_box().encrypt(holder.api_key),
            key_fingerprint(holder.api_key),
            holder.list_id,
        ),
    )


def test_a_shared_list_is_reported_refused_by_full_sync_and_split(
    env: Sandboxes,  # noqa: F811
) -> None:
    db = get_database()
    key = _new_key(env)
    shared_address = "both@example.com"
    holder_account = _install(env, "Old Shop", ("a1@example.com", shared_address))
    link = _connect(holder_account, key)
    holder = Connected(
        holder_account.id,
        key,
        link["list_id"],
        UnisenderClient(key, base_url=f"{env.uni_url}/ru/api"),
    )
    run_sync(holder.account_id)
    assert holder.list_emails() == {"a1@example.com", shared_address}

    other = _install(env, "Old Shop", ("b1@example.com", shared_address))
    _legacy_share(holder, other)
    reported = [s.as_dict() for s in shared_lists(db)]
    assert {
        "account_id": other.id,
        "account_name": other.name,
        "list_id": holder.list_id,
        "list_title": "shared",
        "bound_to_account_id": holder.account_id,
        "bound_to_account_name": holder_account.name,
    } in reported

    # The old damage: the other account's delete excluded an address the holder still has.
    # Its webhook events are refused too (buried with the way out), not written into the list.
    event = ContactEvent(action="delete", contact_id=10**9 + other.id, updated_at=int(time.time()))
    job = ContactEventsJob(account_id=other.id, events=[event], received_at=time.time())
    with pytest.raises(ListShared, match=f"amosync lists split {other.name}"):
        apply_account_events(db, other.id, [job])
    holder.uni.exclude(shared_address, [holder.list_id])
    refused = run_sync(other.id)
    assert refused["status"] == "failed"
    assert str(holder.account_id) in refused["error"]
    assert f"amosync lists split {other.name}" in refused["error"]
    assert "b1@example.com" not in holder.list_emails()

    result = widget_connect.split_shared_list(db, other)
    assert result["old_list_id"] == holder.list_id and result["list_id"] != holder.list_id
    assert result["holder"]["account_id"] == holder.account_id
    assert all(s.account_id != other.id for s in shared_lists(db))
    run_sync(other.id)
    run_sync(holder.account_id)
    split = Connected(other.id, key, result["list_id"], holder.uni)
    assert split.list_emails() == {"b1@example.com", shared_address}
    # The holder's list is whole again and got nothing of the other account's.
    assert holder.list_emails() == {"a1@example.com", shared_address}
    with pytest.raises(Exception) as again:
        widget_connect.split_shared_list(db, other)
    assert getattr(again.value, "code", None) == "list_not_shared"
