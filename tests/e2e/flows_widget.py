"""Reusable e2e flows for the widget: mint amoCRM's widget JWT, connect a Unisender key.

Other e2e tests use `connect_unisender(stack, env, account)` after `install_account(...)`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jwt
import requests

from cli.devstack import Stack

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


def mint_widget_token(
    env: Mapping[str, str],
    account_id: int,
    *,
    subdomain: str = "sandbox",
    secret: str | None = None,
    lifetime: int = 1800,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A widget X-Auth-Token as amoCRM signs it (HS256 with the client secret)."""
    now = int(time.time())
    public = urlsplit(env["PUBLIC_URL"])
    payload: dict[str, Any] = {
        "iss": f"https://{subdomain}.amocrm.ru",
        "aud": f"{public.scheme}://{public.netloc}",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "account_id": account_id,
        "user_id": 8744098,
        "subdomain": subdomain,
        "client_uuid": env["AMOCRM_CLIENT_ID"],
    }
    payload.update(claims or {})
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret or env["AMOCRM_CLIENT_SECRET"], algorithm="HS256")


def unisender_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.unisender}"


def amocrm_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.amocrm}"


def create_unisender_key(stack: Stack, api_key: str | None = None) -> str:
    key = api_key or "e2e" + secrets.token_hex(16)
    resp = requests.post(f"{unisender_url(stack)}/_sandbox/keys", json={"api_key": key}, timeout=5)
    assert resp.status_code == 201, resp.text
    return key


def unisender_state(stack: Stack, api_key: str) -> dict[str, Any]:
    resp = requests.get(f"{unisender_url(stack)}/_sandbox/keys/{api_key}", timeout=5)
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()
    return data


def list_members(stack: Stack, api_key: str, list_id: int) -> dict[str, dict[str, Any]]:
    """Address → contact, for the contacts currently in the list (any per-list status)."""
    return {
        c["email"]: c
        for c in unisender_state(stack, api_key)["contacts"]
        if any(m["id"] == list_id for m in c["lists"])
    }


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
    headers = {"X-Auth-Token": token or mint_widget_token(env, account_id)}
    return requests.request(
        method, f"{stack.gateway_url}{path}", data=data, headers=headers, timeout=30
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
    data = {"api_key": key}
    if email_types:
        data["email_types"] = email_types
    resp = widget_call(stack, env, account_id, data=data)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    hooks = requests.get(f"{amocrm_url(stack)}/_sandbox/accounts/{account_id}", timeout=5).json()[
        "webhooks"
    ]
    prefix = f"{env['PUBLIC_URL'].rstrip('/')}/webhook/{account_id}/"
    destination = next(h["destination"] for h in hooks if h["destination"].startswith(prefix))
    return ConnectedAccount(
        account_id=account_id,
        api_key=key,
        list_id=int(body["list_id"]),
        webhook_destination=destination,
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
