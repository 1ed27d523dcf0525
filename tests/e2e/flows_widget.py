"""Reusable e2e flows for the widget: mint amoCRM's widget JWT, connect a Unisender key.

Other e2e tests use `connect_unisender(stack, env, account)` after `install_account(...)`. The
steps live in `sandbox.flows` (also used by `amosync demo`); this module binds them to a stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

from cli.devstack import Stack
from sandbox import flows

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    return flows.wait_for(
        probe, timeout=timeout, interval=interval, what=what, error=AssertionError
    )


def mint_widget_token(
    env: Mapping[str, str],
    account_id: int,
    *,
    subdomain: str | None = None,
    secret: str | None = None,
    lifetime: int = 1800,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A widget X-Auth-Token as amoCRM signs it (HS256 with the client secret).

    Its `iss`/`subdomain` name the account's stored host (amosync checks them), or "sandbox"
    for an account it does not store.
    """
    return flows.mint_widget_token(
        client_id=env["AMOCRM_CLIENT_ID"],
        client_secret=secret or env["AMOCRM_CLIENT_SECRET"],
        redirect_uri=env["AMOCRM_REDIRECT_URI"],
        account_id=account_id,
        subdomain=subdomain or stored_subdomain(account_id) or "sandbox",
        lifetime=lifetime,
        claims=claims,
    )


def stored_subdomain(account_id: int) -> str | None:
    """The first label of the account's stored host, if amosync stores the account."""
    from shared.db import get_database

    try:
        row = get_database().fetch_one("SELECT host FROM accounts WHERE id = %s", (account_id,))
    except Exception:  # no database in this test (unit tests mint tokens too)
        return None
    return str(row["host"]).split(".", 1)[0] if row else None


def unisender_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.unisender}"


def amocrm_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.amocrm}"


def create_unisender_key(stack: Stack, api_key: str | None = None) -> str:
    return flows.create_unisender_key(unisender_url(stack), api_key)


def unisender_state(stack: Stack, api_key: str) -> dict[str, Any]:
    return flows.unisender_state(unisender_url(stack), api_key)


def list_members(stack: Stack, api_key: str, list_id: int) -> dict[str, dict[str, Any]]:
    """Address → contact, for the contacts currently in the list (any per-list status)."""
    return flows.list_members(unisender_url(stack), api_key, list_id)


def widget_call(
    stack: Stack,
    env: Mapping[str, str],
    account_id: int,
    path: str = "/widget",
    *,
    method: str = "POST",
    data: Mapping[str, Any] | None = None,
    token: str | None = None,
) -> requests.Response:
    return flows.widget_call(
        stack.gateway_url,
        token or mint_widget_token(env, account_id),
        path,
        method=method,
        data=data,
    )


@dataclass(frozen=True)
class ConnectedAccount:
    """An installed account whose widget connected a sandbox Unisender key."""

    account_id: int
    api_key: str
    list_id: int
    webhook_destination: str
    sync_run_id: int | None
    response: dict[str, Any]


def connect_unisender(
    stack: Stack,
    env: Mapping[str, str],
    account: Any,
    *,
    api_key: str | None = None,
    email_types: str | None = None,
) -> ConnectedAccount:
    """Create a sandbox Unisender key and connect it through the gateway like the widget does.

    `account` is an amoCRM account id or anything with an `account_id` / `id` attribute (the
    accounts flow's installed account).
    """
    account_id = _account_id(account)
    key = create_unisender_key(stack, api_key)
    body = flows.connect_widget(
        stack.gateway_url, mint_widget_token(env, account_id), key, email_types=email_types
    )
    return ConnectedAccount(
        account_id=account_id,
        api_key=key,
        list_id=int(body["list_id"]),
        webhook_destination=flows.webhook_destination(
            amocrm_url(stack), account_id, env["PUBLIC_URL"]
        ),
        sync_run_id=(body.get("sync") or {}).get("run_id"),
        response=body,
    )


def _account_id(account: Any) -> int:
    if isinstance(account, int):
        return account
    for attr in ("account_id", "id", "amo_account_id"):
        value = getattr(account, attr, None)
        if isinstance(value, int):
            return value
    if isinstance(account, Mapping):
        return int(account.get("account_id") or account["id"])
    raise TypeError(f"cannot tell the account id of {account!r}")
