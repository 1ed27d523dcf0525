"""Reusable e2e flow: install an amoCRM sandbox account through the gateway, as a person would.

    from tests.e2e.flows_accounts import install_account

    def test_something(stack, isolated_env):
        account = install_account(stack, isolated_env)            # fresh sandbox account
        account = install_account(stack, isolated_env, subdomain="shop", name="my-shop")

`install_account(stack, env, *, subdomain=None, name=None, via="consent")`:
1. creates a sandbox amoCRM account (`POST /_sandbox/accounts`, a random subdomain unless given);
2. `GET {gateway}/auth?name=<name>` → asserts the 302 goes to AMOCRM_AUTH_URL with our client_id;
3. opens the sandbox consent page there, submits "Approve" for that account with the hidden
   fields the page carries (state, client_id, mode);
4. follows the sandbox's 302 back to `{gateway}/auth?code=…&state=…&referer=…` and asserts the
   page says the account is authorized;
5. asserts `accounts` has the row (id, name, host, status active) and `oauth_tokens` has a pair.

`via="widget"` instead uses the sandbox's `install_widget` control call: amoCRM's server-side GET
with `from_widget` and no state; the local name is then derived from the subdomain (`name` must
be None). Both return `InstalledAccount(account_id, name, host)`. `env` is the test environment
(the `isolated_env` fixture, i.e. `base_env`): the DB checks read MySQL through `shared.db`.
Each call creates a new sandbox account, so tests never share one by accident.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import requests

from cli.devstack import Stack

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@dataclass(frozen=True)
class InstalledAccount:
    """An amoCRM sandbox account installed in amosync."""

    account_id: int
    name: str
    host: str


def amocrm_sandbox_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.amocrm}"


def amo_control(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    """Call the amoCRM sandbox control API (`/_sandbox{path}`) and return its JSON."""
    resp = requests.request(
        method, f"{amocrm_sandbox_url(stack)}/_sandbox{path}", timeout=30, **kwargs
    )
    assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
    return resp.json()


def create_sandbox_account(stack: Stack, subdomain: str | None = None) -> dict[str, Any]:
    spec = {"subdomain": subdomain or f"acct{secrets.token_hex(5)}"}
    account: dict[str, Any] = amo_control(stack, "POST", "/accounts", json=spec)
    return account


def start_auth(stack: Stack, env: Mapping[str, str], name: str, **headers: str) -> str:
    """`GET /auth?name=` through the gateway; returns the consent URL it redirects to."""
    resp = requests.get(
        f"{stack.gateway_url}/auth",
        params={"name": name},
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302, f"/auth?name={name}: {resp.status_code} {resp.text[:300]}"
    location = resp.headers["Location"]
    assert location.startswith(env["AMOCRM_AUTH_URL"]), location
    assert parse_qs(urlsplit(location).query)["client_id"] == [env["AMOCRM_CLIENT_ID"]]
    return location


def approve(stack: Stack, consent_url: str, account_id: int, *, decision: str = "approve") -> str:
    """Submit the sandbox consent form; returns the redirect URL back to amosync."""
    page = requests.get(consent_url, timeout=10)
    assert page.status_code == 200, page.text[:300]
    form = {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}
    form.update({"decision": decision, "account_id": str(account_id)})
    resp = requests.post(
        f"{amocrm_sandbox_url(stack)}/oauth/decision",
        data=form,
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 302, resp.text[:300]
    return str(resp.headers["Location"])


def stored_account(account_id: int) -> dict[str, Any] | None:
    from shared.db import get_database

    return get_database().fetch_one(
        "SELECT a.id, a.name, a.host, a.status, t.generation FROM accounts a "
        "LEFT JOIN oauth_tokens t ON t.account_id = a.id WHERE a.id = %s",
        (account_id,),
    )


def install_account(
    stack: Stack,
    env: Mapping[str, str],
    *,
    subdomain: str | None = None,
    name: str | None = None,
    via: Literal["consent", "widget"] = "consent",
) -> InstalledAccount:
    """Create a sandbox account and install it through the gateway (see the module docstring)."""
    created = create_sandbox_account(stack, subdomain)
    account_id, host = int(created["id"]), str(created["host"])
    if via == "widget":
        assert name is None, "widget installs carry no name; it is derived from the subdomain"
        sent = amo_control(stack, "POST", f"/accounts/{account_id}/install_widget")
        assert sent.get("status") == 200, sent
    else:
        local_name = name or str(created["subdomain"])
        back = approve(stack, start_auth(stack, env, local_name), account_id)
        assert back.startswith(env["AMOCRM_REDIRECT_URI"]), back
        resp = requests.get(back, timeout=15, headers={"Accept": "text/html"})
        assert resp.status_code == 200, f"install of {local_name}: {resp.text[:500]}"
        assert html.escape(local_name) in resp.text and str(account_id) in resp.text
    row = stored_account(account_id)
    assert row is not None, f"account {account_id} was not stored"
    assert row["status"] == "active" and row["host"] == host and row["generation"] is not None
    if name is not None:
        assert row["name"] == name
    return InstalledAccount(account_id=account_id, name=str(row["name"]), host=host)
