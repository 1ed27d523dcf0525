"""Reusable e2e flow: install an amoCRM sandbox account through the gateway, as a person would.

    from testing.accounts import install_account

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

The steps themselves live in `devstack.flows` (also used by `amosync demo`); this module binds
them to a test stack and adds the database checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from devstack import flows
from devstack.stack import Stack


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
    return flows.amo_control(amocrm_sandbox_url(stack), method, path, **kwargs)


def create_sandbox_account(stack: Stack, subdomain: str | None = None) -> dict[str, Any]:
    return flows.create_sandbox_account(amocrm_sandbox_url(stack), subdomain)


def start_auth(stack: Stack, env: Mapping[str, str], name: str, **headers: str) -> str:
    """`GET /auth?name=` through the gateway; returns the consent URL it redirects to."""
    return flows.start_auth(
        stack.gateway_url,
        name,
        auth_url=env["AMOCRM_AUTH_URL"],
        client_id=env["AMOCRM_CLIENT_ID"],
        headers=headers,
    )


def approve(stack: Stack, consent_url: str, account_id: int, *, decision: str = "approve") -> str:
    """Submit the sandbox consent form; returns the redirect URL back to amosync."""
    return flows.approve(amocrm_sandbox_url(stack), consent_url, account_id, decision=decision)


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
        flows.install_widget(amocrm_sandbox_url(stack), account_id)
    else:
        local_name = name or str(created["subdomain"])
        back = approve(stack, start_auth(stack, env, local_name), account_id)
        flows.complete_auth(
            back, redirect_uri=env["AMOCRM_REDIRECT_URI"], name=local_name, account_id=account_id
        )
    row = stored_account(account_id)
    assert row is not None, f"account {account_id} was not stored"
    assert row["status"] == "active" and row["host"] == host and row["generation"] is not None
    if name is not None:
        assert row["name"] == name
    return InstalledAccount(account_id=account_id, name=str(row["name"]), host=host)
