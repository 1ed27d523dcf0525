"""Reusable e2e flows for syncs: a connected sandbox account with N contacts, runs, request logs."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from devstack.stack import Stack
from testing.accounts import amo_control
from testing.widget import (
    connect_unisender,
    list_members,
    unisender_url,
    wait_for,
)


@dataclass(frozen=True)
class SyncAccount:
    """An installed amoCRM sandbox account with a connected Unisender list."""

    account_id: int
    name: str
    api_key: str
    list_id: int


def admin(env: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {env['ADMIN_TOKEN']}"}


def install_connected_account(stack: Stack, env: Mapping[str, str]) -> SyncAccount:
    """Create a sandbox account, install it the widget way, connect Unisender, await first sync."""
    from shared.db import get_database

    created = amo_control(
        stack, "POST", "/accounts", json={"subdomain": f"sync{secrets.token_hex(4)}"}
    )
    account_id = int(created["id"])
    install = amo_control(stack, "POST", f"/accounts/{account_id}/install_widget")
    assert install.get("status") == 200, install
    row = get_database().fetch_one("SELECT name FROM accounts WHERE id = %s", (account_id,))
    assert row is not None, "the widget install did not store the account"
    connected = connect_unisender(stack, env, account_id)
    if connected.sync_run_id is not None:
        wait_run(stack, env, connected.sync_run_id)
    return SyncAccount(account_id, str(row["name"]), connected.api_key, connected.list_id)


def seed_contacts(stack: Stack, account_id: int, count: int) -> list[int]:
    """`count` contacts with one address each, added without webhooks (notify=false)."""
    result = amo_control(
        stack,
        "POST",
        f"/accounts/{account_id}/changes",
        json={"generate": count, "notify": False},
    )
    return list(result["added"])


def delete_contacts(stack: Stack, account_id: int, ids: list[int]) -> None:
    """Trash contacts in amoCRM while their webhooks are lost (notify=false)."""
    amo_control(
        stack, "POST", f"/accounts/{account_id}/changes", json={"delete": ids, "notify": False}
    )


def sandbox_contacts(stack: Stack, account_id: int) -> list[dict[str, Any]]:
    return list(amo_control(stack, "GET", f"/accounts/{account_id}/contacts"))


def amo_requests(stack: Stack, account_id: int, *, since: float) -> list[dict[str, Any]]:
    entries = amo_control(stack, "GET", "/requests", params={"account_id": account_id})
    return [e for e in entries if e["at"] >= since]


def max_per_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def import_calls(stack: Stack, api_key: str) -> list[dict[str, Any]]:
    resp = requests.get(
        f"{unisender_url(stack)}/_sandbox/keys/{api_key}/calls",
        params={"method": "importContacts"},
        timeout=5,
    )
    resp.raise_for_status()
    return list(resp.json()["log"])


def list_addresses(stack: Stack, account: SyncAccount) -> set[str]:
    """Addresses that are in the account's list (active membership)."""
    return {
        email
        for email, contact in list_members(stack, account.api_key, account.list_id).items()
        if any(m["id"] == account.list_id and m["status"] == "active" for m in contact["lists"])
    }


def expected_addresses(stack: Stack, account_id: int) -> set[str]:
    """What the list must hold: the emails of the account's live contacts in amoCRM."""
    out: set[str] = set()
    for contact in sandbox_contacts(stack, account_id):
        if contact["type"] != "contact" or contact["deleted"]:
            continue
        for field in contact.get("custom_fields_values") or []:
            if field.get("field_code") == "EMAIL":
                out.update(v["value"].strip().lower() for v in field["values"])
    return out


def start_sync(stack: Stack, env: Mapping[str, str], name: str, method: str = "POST") -> Any:
    resp = requests.request(
        method, f"{stack.gateway_url}/sync", params={"name": name}, headers=admin(env), timeout=10
    )
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


def run_status(stack: Stack, env: Mapping[str, str], run_id: int) -> dict[str, Any]:
    resp = requests.get(
        f"{stack.gateway_url}/sync/status",
        params={"run_id": run_id},
        headers=admin(env),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_run(
    stack: Stack, env: Mapping[str, str], run_id: int, *, timeout: float = 60
) -> dict[str, Any]:
    """Poll /sync/status until the run finishes."""

    def finished() -> dict[str, Any] | None:
        body = run_status(stack, env, run_id)
        return body if body["finished"] else None

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"sync run {run_id}")


def now() -> float:
    return time.time()
