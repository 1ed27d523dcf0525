"""Shared by the hostile-input suite: one connected account, the secrets to look for, checks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from devstack import flows
from devstack.stack import Stack

# Rows a refused request must never add or change (counts and a checksum of each table).
GUARDED_TABLES = (
    "accounts",
    "oauth_tokens",
    "unisender_settings",
    "contacts",
    "contact_emails",
    "list_members",
    "sync_runs",
    "parked_jobs",
    "widget_token_uses",
    "oauth_states",
)
QUEUED_TUBES = ("contact-events", "full-sync")

INJECTIONS = [
    "'; DROP TABLE accounts; --",
    '" OR "1"="1',
    "1 OR 1=1",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "../../etc/passwd",
    "%00",
    "\x00",
    "a\r\nSet-Cookie: x=1",
    "\U0001d518\U0001d52b\U0001d526 \U0001f642",  # astral plane, 4-byte UTF-8
    "\u202e\u0000\ufeff",
    "a" * 5000,
    "x@y.z' OR '1'='1",
    "robert'); DELETE FROM contacts; --@example.com",
    "=cmd|' /C calc'!A0",
]


@dataclass
class Target:
    """The stack, a connected account and every secret that must never leak."""

    stack: Stack = field(repr=False)
    env: dict[str, str] = field(repr=False)
    account_id: int
    account_name: str
    api_key: str
    webhook_url: str
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        return self.stack.gateway_url

    # Failing examples print their arguments: never with the secrets in them.
    def __repr__(self) -> str:
        return f"Target(account_id={self.account_id}, url={self.url!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['ADMIN_TOKEN']}"}


@pytest.fixture(scope="session")
def target(stack: Stack, base_env: dict[str, str]) -> Iterator[Target]:
    """An installed, connected account of the session stack, known secrets collected."""
    import os

    from testing.accounts import install_account
    from testing.caches import reset_caches
    from testing.widget import connect_unisender

    saved = dict(os.environ)
    os.environ.update(base_env)
    reset_caches()
    try:
        installed = install_account(stack, base_env)
        connected = connect_unisender(stack, base_env, installed.account_id)
        from shared.crypto import get_secret_box
        from shared.db import get_database

        tokens = get_database().fetch_one(
            "SELECT access_token_enc, refresh_token_enc FROM oauth_tokens WHERE account_id = %s",
            (installed.account_id,),
        )
        assert tokens is not None
        box = get_secret_box()
        webhook_secret = connected.webhook_destination.rsplit("/", 1)[1]
        found = {
            "ADMIN_TOKEN": base_env["ADMIN_TOKEN"],
            "AMOCRM_CLIENT_SECRET": base_env["AMOCRM_CLIENT_SECRET"],
            "ENCRYPTION_KEY": base_env["ENCRYPTION_KEY"],
            "unisender api key": connected.api_key,
            "webhook secret": webhook_secret,
            "amoCRM access token": box.decrypt(tokens["access_token_enc"]),
            "amoCRM refresh token": box.decrypt(tokens["refresh_token_enc"]),
        }
        if connected.sync_run_id is not None:
            from testing.sync import wait_run

            wait_run(stack, base_env, connected.sync_run_id)
        quiesce()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_caches()
    webhook_url = connected.webhook_destination.replace(
        base_env["PUBLIC_URL"].rstrip("/"), stack.gateway_url
    )
    yield Target(
        stack=stack,
        env=base_env,
        account_id=installed.account_id,
        account_name=installed.name,
        api_key=connected.api_key,
        webhook_url=webhook_url,
        secrets=found,
    )


def quiesce(timeout: float = 30) -> None:
    """Wait until no job is queued or running, so the guarded tables hold still."""
    from shared.jobqueue import get_queue
    from shared.jobs import JOB_TYPES
    from testing.widget import wait_for

    def idle() -> bool:
        for tube in JOB_TYPES:
            stats = get_queue().tube_stats(tube)
            busy = ("current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed")
            if any(stats[k] for k in busy):
                return False
        return True

    wait_for(idle, timeout=timeout, interval=0.2, what="an idle queue")


def snapshot(db: Any, tables: tuple[str, ...] = GUARDED_TABLES) -> dict[str, Any]:
    """Row counts and content checksums of the guarded tables, and the queues' job totals."""
    from shared.jobqueue import get_queue

    state: dict[str, Any] = {}
    for table in tables:
        row = db.fetch_one(f"CHECKSUM TABLE {table}")
        count = db.fetch_one(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608
        state[table] = (count["n"], row["Checksum"] if row else None)
    queue = get_queue()
    for tube in QUEUED_TUBES:
        state[f"tube:{tube}"] = queue.tube_stats(tube)["total-jobs"]
    return state


def is_nginx_refusal(resp: requests.Response) -> bool:
    """nginx's own 400/414 page, for a request line it cannot parse (see SECURITY.md)."""
    return resp.status_code in (400, 414) and "<center>nginx</center>" in resp.text


def assert_refusal_shape(
    resp: requests.Response, *, where: str, unparsable_uri: bool = False
) -> None:
    """A refusal is a 4xx whose body is {"error": {"code", "message"}}; never a 5xx.

    The one exception: a URI nginx cannot parse (an encoded NUL, over 8 KiB) is refused by nginx
    before any location, and so before any error_page can give it the JSON shape.
    """
    assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:500]}"
    too_long = len(resp.request.url or "") > 8000 if resp.request is not None else False
    if (unparsable_uri or too_long) and is_nginx_refusal(resp):
        return
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except json.JSONDecodeError:
            raise AssertionError(
                f"{where}: {resp.status_code} without the JSON error shape: {resp.text[:300]!r}"
            ) from None
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), (where, body)
        assert isinstance(body["error"].get("code"), str), (where, body)
        assert isinstance(body["error"].get("message"), str), (where, body)


def assert_no_secret(target: Target, text: str, *, where: str) -> None:
    for name, value in target.secrets.items():
        if value and len(value) >= 8:
            assert value not in text, f"{name} leaked in {where}"


def check_response(
    target: Target, resp: requests.Response, *, where: str, unparsable_uri: bool = False
) -> None:
    assert_refusal_shape(resp, where=where, unparsable_uri=unparsable_uri)
    headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    assert_no_secret(target, headers + "\n" + resp.text, where=f"the response of {where}")


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}


def account_host(account_id: int) -> str:
    """The host amosync stores for the account (what a widget token's `iss` must name)."""
    from shared.db import get_database

    row = get_database().fetch_one("SELECT host FROM accounts WHERE id = %s", (account_id,))
    assert row is not None, f"account {account_id} is not stored"
    return str(row["host"])


def widget_claims(target: Target, **overrides: Any) -> dict[str, Any]:
    """Widget JWT claims exactly as amoCRM signs them for the target account (reference §6.2).

    `aud` is the scheme + host of the Redirect URI; an override of None drops the claim.
    """
    return flows.widget_claims(
        client_id=target.env["AMOCRM_CLIENT_ID"],
        redirect_uri=target.env["AMOCRM_REDIRECT_URI"],
        account_id=target.account_id,
        host=account_host(target.account_id),
        user_id=1,
        overrides=overrides,
    )


def widget_token_calls(target: Target, token: str) -> Iterator[tuple[str, requests.Response]]:
    """The token sent to a reading, a writing and a shared widget route, one answer each."""
    for method, route in (("GET", "/widget/status"), ("POST", "/widget"), ("GET", "/contacts")):
        resp = requests.request(
            method,
            target.url + route,
            headers={"X-Auth-Token": token},
            data={"api_key": "x"},
            timeout=15,
        )
        yield f"{method} {route}", resp
