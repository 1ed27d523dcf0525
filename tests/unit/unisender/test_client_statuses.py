"""Batched removal rows and list-status exports against the Unisender emulator (issue 12 item 6)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.unisender import UnisenderClient
from tests.unit.unisender.conftest import SandboxServer

SEED = {
    "lists": ["ours", "theirs"],
    "contacts": [
        {"email": "on@x.ru", "status": "active", "lists": ["ours", "theirs"]},
        {
            "email": "left@x.ru",
            "status": "active",
            "lists": ["ours"],
            "unsubscribed_lists": ["ours"],
        },
        {"email": "gone@x.ru", "status": "unsubscribed", "lists": ["ours"]},
        {"email": "other@x.ru", "status": "active", "lists": ["theirs"]},
    ],
}


@pytest.fixture
def seeded_key(sandbox: SandboxServer) -> str:
    return sandbox.new_key(**SEED)


@pytest.fixture
def seeded(
    sandbox: SandboxServer, seeded_key: str
) -> Iterator[tuple[UnisenderClient, dict[str, int]]]:
    # Real sleeps: the export task completes on the emulator's clock.
    with UnisenderClient(seeded_key, base_url=sandbox.api_url, sleep=time.sleep) as client:
        yield client, {item.title: item.id for item in client.get_lists()}


def test_the_async_export_gives_every_address_of_the_list_with_its_opt_outs(
    sandbox: SandboxServer, seeded: tuple[UnisenderClient, dict[str, int]]
) -> None:
    client, lists = seeded
    statuses = client.export_list_statuses(lists["ours"], notify_url="http://127.0.0.1:9/")
    assert statuses is not None
    assert sorted(statuses) == ["gone@x.ru", "left@x.ru", "on@x.ru"]  # list members only
    opted = sorted(e for e, s in statuses.items() if s.unsubscribed_from(lists["ours"]))
    assert opted == ["gone@x.ru", "left@x.ru"]
    assert statuses["on@x.ru"].list_ids == {lists["ours"], lists["theirs"]}
    assert not statuses["left@x.ru"].unsubscribed_from(lists["theirs"])
    assert client.call_counts["async/exportContacts"] == 1
    assert client.call_counts["async/getTaskResult"] <= 2


def test_without_the_async_method_the_legacy_export_is_used(
    sandbox: SandboxServer, seeded: tuple[UnisenderClient, dict[str, int]]
) -> None:
    client, lists = seeded
    sandbox.fault(kind="error", code="unknown_method", method="async/exportContacts")
    statuses = client.export_list_statuses(lists["ours"], notify_url="http://127.0.0.1:9/")
    assert statuses is not None and sorted(statuses) == ["gone@x.ru", "left@x.ru", "on@x.ru"]
    assert statuses["left@x.ru"].unsubscribed_from(lists["ours"])
    assert client.call_counts["exportContacts"] == 1


def test_refused_status_columns_mean_no_snapshot(
    sandbox: SandboxServer, seeded: tuple[UnisenderClient, dict[str, int]]
) -> None:
    client, lists = seeded
    sandbox.fault(kind="error", code="invalid_arg", method="async/exportContacts")
    assert client.export_list_statuses(lists["ours"], notify_url="http://127.0.0.1:9/") is None


def test_removal_rows_take_addresses_off_our_list_only_in_one_call(
    sandbox: SandboxServer, seeded: tuple[UnisenderClient, dict[str, int]], seeded_key: str
) -> None:
    client, lists = seeded
    result = client.exclude_from_list(["on@x.ru", "left@x.ru", "gone@x.ru"], lists["ours"])
    assert result.calls == 1 and result.row_errors == []
    state = sandbox.state(seeded_key)
    by_email = {c["email"]: c for c in state["contacts"]}
    assert len(by_email) == 4  # nobody deleted from the account
    assert [m["id"] for m in by_email["on@x.ru"]["lists"]] == [lists["theirs"]]
    assert state["resubscribe_attempts"] == []
    # Opt-outs survive the removal: the emulator still knows who unsubscribed from our list.
    assert by_email["left@x.ru"]["unsubscribed_lists"] == [lists["ours"]]


def test_an_account_wide_export_finds_opt_outs_on_no_list(
    seeded: tuple[UnisenderClient, dict[str, int]],
) -> None:
    client, _ = seeded
    statuses = client.export_list_statuses(
        None, notify_url="http://127.0.0.1:9/", email_status="unsubscribed"
    )
    assert statuses is not None and sorted(statuses) == ["gone@x.ru"]
