"""Two hostile tenants on one Unisender key, odd referers, replayed disable hooks (issue 18).

One run, through the gateway: two amoCRM accounts with the same name connect the same Unisender
key (they get two lists), amoCRM codes arrive with odd referers (refused before any exchange),
the taken-name and disable-hook paths are exercised and replayed. Afterwards: no answer was a
5xx (ours, and every line nginx logged meanwhile), and no secret of the run (tokens, keys,
webhook secrets, authorization codes, the client secret, the admin token, ENCRYPTION_KEY) is in
any log of the stack, in a mysqldump of the database, or in beanstalkd's binlog. Passes run
alone: it makes all of its own traffic.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import flows
from shared.oauth_flow import disable_signature
from testing.accounts import amo_control, amocrm_sandbox_url
from testing.widget import amocrm_url, create_unisender_key, mint_widget_token
from tests.conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, Beanstalkd
from tests.hostile.conftest import Target, assert_refusal_shape, quiesce

pytestmark = [pytest.mark.hostile, pytest.mark.e2e]

JSON = {"Accept": "application/json"}


class Run:
    """Every answer of the run and every secret it handled."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.answers: list[tuple[str, int]] = []
        self.secrets: dict[str, str] = dict(target.secrets)

    def keep(self, where: str, resp: requests.Response) -> requests.Response:
        self.answers.append((where, resp.status_code))
        assert_refusal_shape(resp, where=where)
        return resp

    def get(self, where: str, path: str, **kwargs: Any) -> requests.Response:
        return self.keep(where, requests.get(f"{self.target.url}{path}", timeout=30, **kwargs))


@pytest.fixture
def access_log_offset(target: Target) -> Iterator[int]:
    path = target.stack.workdir / "nginx" / "access.log"
    yield path.stat().st_size if path.exists() else 0


def _tenant(run: Run, name: str) -> dict[str, Any]:
    """A sandbox account called `name`, installed the widget way (amoCRM's server-side GET)."""
    stack = run.target.stack
    created = flows.create_sandbox_account(amocrm_sandbox_url(stack), name=name)
    flows.install_widget(amocrm_sandbox_url(stack), int(created["id"]))
    return created


def _connect(run: Run, tenant: dict[str, Any], key: str) -> dict[str, Any]:
    token = mint_widget_token(run.target.env, int(tenant["id"]), subdomain=tenant["subdomain"])
    resp = run.keep(
        "POST /widget",
        flows.widget_call(run.target.url, token, data={"api_key": key}),
    )
    assert resp.status_code == 200, resp.text
    destination = flows.webhook_destination(
        amocrm_url(run.target.stack), int(tenant["id"]), run.target.env["PUBLIC_URL"]
    )
    run.secrets[f"webhook secret of {tenant['id']}"] = destination.rsplit("/", 1)[1]
    body: dict[str, Any] = resp.json()
    return body


def _collect_tokens(run: Run, *account_ids: int) -> None:
    from shared.crypto import get_secret_box
    from shared.db import get_database

    box = get_secret_box()
    for account_id in account_ids:
        row = get_database().fetch_one(
            "SELECT access_token_enc, refresh_token_enc FROM oauth_tokens WHERE account_id = %s",
            (account_id,),
        )
        assert row is not None
        run.secrets[f"access token of {account_id}"] = box.decrypt(row["access_token_enc"])
        run.secrets[f"refresh token of {account_id}"] = box.decrypt(row["refresh_token_enc"])


def _hostile_traffic(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    env, stack = run.target.env, run.target.stack
    first, second = _tenant(run, "Twin Tenant"), _tenant(run, "Twin Tenant")
    _collect_tokens(run, int(first["id"]), int(second["id"]))
    key = create_unisender_key(stack)
    run.secrets["shared Unisender key"] = key
    one, two = _connect(run, first, key), _connect(run, second, key)
    assert one["list_id"] != two["list_id"], "two tenants got one list"

    # Real authorization codes with odd referers: refused before the code is exchanged.
    for referer in ("amocrm.ru", f"{first['host']}.", "xn--80ak6aa92e.amocrm.ru", "a.b.amocrm.ru"):
        issued = amo_control(stack, "POST", f"/accounts/{first['id']}/code", json={})
        run.secrets[f"code for {referer}"] = issued["code"]
        resp = run.get(
            f"/auth from_widget referer={referer}",
            "/auth",
            params={"code": issued["code"], "referer": referer, "from_widget": "1"},
            headers=JSON,
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "referer_not_allowed"
        # The refused code is unspent: it still installs through the right referer.
        ok = run.get(
            "/auth from_widget with the code again",
            "/auth",
            params={"code": issued["code"], "referer": first["host"], "from_widget": "1"},
            headers=JSON,
        )
        assert ok.status_code == 200, ok.text
    _collect_tokens(run, int(first["id"]))

    # The taken-name path: the other tenant's consent under the first tenant's new name.
    for account_id, expected in ((first["id"], 200), (second["id"], 409)):
        start = run.get("/auth?name=", "/auth", params={"name": "twin-held"}, allow_redirects=False)
        back = flows.approve(amocrm_sandbox_url(stack), start.headers["Location"], int(account_id))
        resp = run.keep("/auth callback", requests.get(back, timeout=30, headers=JSON))
        assert resp.status_code == expected, resp.text
    assert resp.json()["error"]["code"] == "name_taken"
    _collect_tokens(run, int(first["id"]))

    # amoCRM's disable hook, then the same hook replayed: same truthful answer every time.
    secret = env["AMOCRM_CLIENT_SECRET"]
    hook = {
        "client_uuid": env["AMOCRM_CLIENT_ID"],
        "account_id": str(second["id"]),
        "signature": disable_signature(secret, env["AMOCRM_CLIENT_ID"], str(second["id"])),
    }
    for attempt in range(3):
        resp = run.get(f"/auth/disable #{attempt}", "/auth/disable", params=hook)
        assert resp.status_code == 200 and resp.json()["known"] is True
    return one, two


def _mysqldump(database: str) -> str:
    command = ["mysqldump", "-h", MYSQL_HOST, "-P", str(MYSQL_PORT), "-u", MYSQL_USER]
    if MYSQL_PASSWORD:
        command.append(f"-p{MYSQL_PASSWORD}")
    done = subprocess.run(
        [*command, "--single-transaction", "--skip-lock-tables", database],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return done.stdout.decode("utf-8", errors="replace")


def _stack_logs(target: Target) -> list[Path]:
    workdir = target.stack.workdir
    # The emulators stand for amoCRM and Unisender, who hold those credentials anyway.
    logs = [p for p in workdir.glob("*.log") if not p.name.startswith("sandbox-")]
    return logs + sorted((workdir / "nginx").glob("*.log"))


def test_a_hostile_two_tenant_run_leaves_no_5xx_and_no_secret_at_rest(
    target: Target, access_log_offset: int, beanstalkd_server: Beanstalkd
) -> None:
    run = Run(target)
    _hostile_traffic(run)
    quiesce()

    assert not [a for a in run.answers if a[1] >= 500], run.answers
    access = (target.stack.workdir / "nginx" / "access.log").read_bytes()[access_log_offset:]
    statuses = [json.loads(line)["status"] for line in access.decode().splitlines() if line]
    assert statuses and not [s for s in statuses if s >= 500], statuses

    secrets = {k: v for k, v in run.secrets.items() if v and len(v) >= 8}
    assert len(secrets) >= 15, sorted(secrets)
    places: dict[str, bytes] = {p.name: p.read_bytes() for p in _stack_logs(target)}
    places["mysqldump"] = _mysqldump(target.env["MYSQL_DATABASE"]).encode()
    binlogs = sorted(beanstalkd_server.binlog.glob("binlog.*"))
    assert binlogs, "beanstalkd keeps a binlog"
    places.update({f"beanstalkd {p.name}": p.read_bytes() for p in binlogs})
    assert b"unisender_list_bindings" in places["mysqldump"]
    leaks = [
        f"{name} in {where}"
        for where, content in places.items()
        for name, value in secrets.items()
        if value.encode() in content
    ]
    assert not leaks, leaks
