"""What a person does against the emulators, as functions: `amosync demo` and the e2e tests.

Install an amoCRM sandbox account through the gateway's `/auth` (the consent page's Approve),
connect a Unisender sandbox key through `POST /widget` with a widget JWT minted the way amoCRM
mints it, add contacts in amoCRM (which POSTs real webhooks) and watch the Unisender list.
Every step talks HTTP only; a step that does not go as amoCRM would have it raises FlowError.
"""

from __future__ import annotations

import html
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import jwt
import requests

T = TypeVar("T")

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class FlowError(RuntimeError):
    """A step of a sandbox flow did not go as amoCRM / Unisender / amosync should make it go."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise FlowError(message)


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "",
    error: type[Exception] = FlowError,
) -> T:
    """Poll `probe` until it returns something truthy; raise `error` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise error(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


# --- amoCRM sandbox -------------------------------------------------------------------------------


def amo_control(
    amocrm_url: str, method: str, path: str, *, timeout: float = 30, **kwargs: Any
) -> Any:
    """Call the amoCRM sandbox control API (`/_sandbox{path}`) and return its JSON."""
    resp = requests.request(method, f"{amocrm_url}/_sandbox{path}", timeout=timeout, **kwargs)
    check(resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:500]}")
    return resp.json()


def create_sandbox_account(
    amocrm_url: str, subdomain: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """A new amoCRM sandbox account (random subdomain unless given): id, subdomain, host, …"""
    spec: dict[str, Any] = {"subdomain": subdomain or f"acct{secrets.token_hex(5)}"}
    if name:
        spec["name"] = name
    account: dict[str, Any] = amo_control(amocrm_url, "POST", "/accounts", json=spec)
    return account


def start_auth(
    gateway_url: str,
    name: str,
    *,
    auth_url: str | None,
    client_id: str,
    headers: Mapping[str, str] | None = None,
) -> str:
    """`GET /auth?name=` through the gateway; returns the consent URL it redirects to.

    `auth_url`, when given, is where the redirect must point (amosync's AMOCRM_AUTH_URL).
    """
    resp = requests.get(
        f"{gateway_url}/auth",
        params={"name": name},
        headers=dict(headers or {}),
        allow_redirects=False,
        timeout=10,
    )
    check(resp.status_code == 302, f"/auth?name={name}: {resp.status_code} {resp.text[:300]}")
    location = str(resp.headers["Location"])
    if auth_url is not None:
        check(location.startswith(auth_url), f"/auth sent us to {location}, not to {auth_url}")
    sent = parse_qs(urlsplit(location).query).get("client_id")
    check(sent == [client_id], f"/auth sent client_id {sent}, expected {client_id!r}")
    return location


def approve(
    amocrm_url: str, consent_url: str, account_id: int, *, decision: str = "approve"
) -> str:
    """Submit the sandbox consent form for `account_id`; returns the redirect back to amosync."""
    page = requests.get(consent_url, timeout=10)
    check(
        page.status_code == 200,
        f"consent page {consent_url}: {page.status_code} {page.text[:300]} (does the amoCRM "
        "sandbox run with the same AMOCRM_CLIENT_ID as amosync?)",
    )
    form = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    form.update({"decision": decision, "account_id": str(account_id)})
    resp = requests.post(
        f"{amocrm_url}/oauth/decision", data=form, allow_redirects=False, timeout=10
    )
    check(resp.status_code == 302, f"consent decision: {resp.status_code} {resp.text[:300]}")
    return str(resp.headers["Location"])


def complete_auth(back_url: str, *, redirect_uri: str, name: str, account_id: int) -> str:
    """Follow the consent page's redirect to amosync's /auth; returns the page it answers."""
    check(back_url.startswith(redirect_uri), f"redirected to {back_url}, not to {redirect_uri}")
    resp = requests.get(back_url, timeout=15, headers={"Accept": "text/html"})
    check(resp.status_code == 200, f"install of {name}: {resp.status_code} {resp.text[:500]}")
    check(
        html.escape(name) in resp.text and str(account_id) in resp.text,
        f"the /auth page does not name {name} / {account_id}: {resp.text[:300]}",
    )
    return resp.text


def install_widget(amocrm_url: str, account_id: int) -> None:
    """amoCRM's server-side widget install (code, referer, from_widget; no state)."""
    sent = amo_control(amocrm_url, "POST", f"/accounts/{account_id}/install_widget")
    check(sent.get("status") == 200, f"widget install: {sent}")


def add_contacts(
    amocrm_url: str, account_id: int, contacts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Add contacts in one amoCRM change: one webhook POST per subscribed destination.

    Returns the sandbox's answer: `added` ids and `deliveries` (destination, status, error).
    """
    result: dict[str, Any] = amo_control(
        amocrm_url,
        "POST",
        f"/accounts/{account_id}/changes",
        json={"add": list(contacts), "notify": True},
    )
    return result


def webhook_destination(amocrm_url: str, account_id: int, public_url: str) -> str:
    """The webhook amosync subscribed for the account (`<PUBLIC_URL>/webhook/<id>/<secret>`)."""
    hooks = amo_control(amocrm_url, "GET", f"/accounts/{account_id}")["webhooks"]
    prefix = f"{public_url.rstrip('/')}/webhook/{account_id}/"
    found = [h["destination"] for h in hooks if h["destination"].startswith(prefix)]
    check(found, f"no webhook under {prefix} in {hooks}")
    return str(found[0])


# --- the widget -----------------------------------------------------------------------------------


def widget_claims(
    *,
    client_id: str,
    redirect_uri: str,
    account_id: int,
    host: str = "sandbox.amocrm.ru",
    user_id: int = 8744098,
    lifetime: int = 1800,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Widget JWT claims as amoCRM signs them for the account at `host` (reference §6.2).

    `aud` is the scheme + host of the integration's Redirect URI, no port; an override of None
    drops the claim.
    """
    now = int(time.time())
    redirect = urlsplit(redirect_uri)
    claims: dict[str, Any] = {
        "iss": f"https://{host}",
        "aud": f"{redirect.scheme}://{redirect.hostname}",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "account_id": account_id,
        "user_id": user_id,
        "subdomain": host.split(".")[0],
        "client_uuid": client_id,
    }
    claims.update(overrides or {})
    return {k: v for k, v in claims.items() if v is not None}


def mint_widget_token(
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    account_id: int,
    subdomain: str = "sandbox",
    lifetime: int = 1800,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """A widget X-Auth-Token as amoCRM signs it: HS256 with the integration's client secret.

    Only amoCRM holds that secret in production; minting with it is a sandbox-only move.
    """
    payload = widget_claims(
        client_id=client_id,
        redirect_uri=redirect_uri,
        account_id=account_id,
        host=f"{subdomain}.amocrm.ru",
        lifetime=lifetime,
        overrides=claims,
    )
    return jwt.encode(payload, client_secret, algorithm="HS256")


def widget_call(
    gateway_url: str,
    token: str,
    path: str = "/widget",
    *,
    method: str = "POST",
    data: Mapping[str, Any] | None = None,
) -> requests.Response:
    """Call the widget backend the way the widget's `$authorizedAjax` does."""
    return requests.request(
        method, f"{gateway_url}{path}", data=data, headers={"X-Auth-Token": token}, timeout=30
    )


def connect_widget(
    gateway_url: str, token: str, api_key: str, *, email_types: str | None = None
) -> dict[str, Any]:
    """`POST /widget` with the Unisender key; returns amosync's answer (list_id, sync, …)."""
    data = {"api_key": api_key}
    if email_types:
        data["email_types"] = email_types
    resp = widget_call(gateway_url, token, data=data)
    check(resp.status_code == 200, f"POST /widget: {resp.status_code} {resp.text[:500]}")
    body: dict[str, Any] = resp.json()
    return body


# --- Unisender sandbox ----------------------------------------------------------------------------


def create_unisender_key(unisender_url: str, api_key: str | None = None) -> str:
    """A new Unisender sandbox key (random unless given)."""
    key = api_key or "e2e" + secrets.token_hex(16)
    resp = requests.post(f"{unisender_url}/_sandbox/keys", json={"api_key": key}, timeout=5)
    check(resp.status_code == 201, f"create Unisender key: {resp.status_code} {resp.text[:300]}")
    return key


def ensure_unisender_key(unisender_url: str, api_key: str) -> bool:
    """Make sure the emulator knows `api_key`; True if it had to be created."""
    resp = requests.get(f"{unisender_url}/_sandbox/keys/{api_key}", timeout=5)
    if resp.status_code == 200:
        return False
    create_unisender_key(unisender_url, api_key)
    return True


def unisender_state(unisender_url: str, api_key: str) -> dict[str, Any]:
    """Lists, fields, contacts and call counts of a Unisender sandbox key."""
    resp = requests.get(f"{unisender_url}/_sandbox/keys/{api_key}", timeout=5)
    check(resp.status_code == 200, f"Unisender key {api_key}: {resp.status_code}")
    data: dict[str, Any] = resp.json()
    return data


def list_members(unisender_url: str, api_key: str, list_id: int) -> dict[str, dict[str, Any]]:
    """Address → contact, for the contacts currently in the list (any per-list status)."""
    return {
        c["email"]: c
        for c in unisender_state(unisender_url, api_key)["contacts"]
        if any(m["id"] == list_id for m in c["lists"])
    }
