"""Webhooks end to end: the amoCRM sandbox POSTs real webhooks through nginx; results are read
back from the Unisender sandbox. Every "Done when" bullet of issue 5."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

import pytest
import requests

from devstack.stack import Stack
from testing.accounts import amo_control
from testing.caches import reset_caches
from testing.widget import (
    ConnectedAccount,
    connect_unisender,
    list_members,
    unisender_url,
    wait_for,
)
from tests.conftest import Beanstalkd
from tests.e2e.test_widget import install

pytestmark = pytest.mark.e2e


def changes(stack: Stack, account: ConnectedAccount, **body: Any) -> dict[str, Any]:
    """Change contacts in amoCRM; every change of one call goes out as ONE webhook POST."""
    result: dict[str, Any] = amo_control(
        stack, "POST", f"/accounts/{account.account_id}/changes", json=body, timeout=60
    )
    return result


def members(stack: Stack, account: ConnectedAccount) -> dict[str, dict[str, Any]]:
    return list_members(stack, account.api_key, account.list_id)


def await_members(
    stack: Stack,
    account: ConnectedAccount,
    expected: Mapping[str, str | None],
    *,
    timeout: float = 20,
) -> dict[str, dict[str, Any]]:
    """Wait until these addresses are in (name given or None) / out (key absent → use `absent`)."""

    def probe() -> dict[str, dict[str, Any]] | None:
        now = members(stack, account)
        for email, name in expected.items():
            if name is None:
                if email in now:
                    return None
            elif email not in now or now[email]["fields"].get("Name") != name:
                return None
        return now

    return wait_for(probe, timeout=timeout, what=f"list state {dict(expected)}")


def delivered_ok(result: dict[str, Any]) -> None:
    statuses = [d["status"] for d in result["deliveries"]]
    assert statuses and all(s == 200 for s in statuses), result["deliveries"]


@pytest.fixture(scope="module")
def accounts(stack: Stack, base_env: dict[str, str]) -> tuple[ConnectedAccount, ConnectedAccount]:
    # Module scope runs before the per-test environment: point settings at the test run here.
    saved = dict(os.environ)
    os.environ.update(base_env)
    reset_caches()
    try:
        pair = [connect_unisender(stack, base_env, install(stack)) for _ in range(2)]
        for connected in pair:  # the first full syncs must not race the tests' counts
            wait_for(
                lambda c=connected: _run_finished(c.sync_run_id),  # type: ignore[misc]
                timeout=30,
                what="first full sync",
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_caches()
    return pair[0], pair[1]


def _run_finished(run_id: int | None) -> bool:
    from shared.db import get_database

    if run_id is None:
        return True
    row = get_database().fetch_one("SELECT status FROM sync_runs WHERE id = %s", (run_id,))
    return bool(row and row["status"] not in ("queued", "running"))


def contact(email: str | list[str], name: str) -> dict[str, Any]:
    return {"name": name, "emails": [email] if isinstance(email, str) else email}


def tag() -> str:
    return secrets.token_hex(3)


def test_one_post_with_three_adds_two_updates_one_delete(stack: Stack, accounts: Any) -> None:
    a, _ = accounts
    t = tag()
    base = changes(stack, a, add=[contact(f"u{i}-{t}@x.ru", f"U{i}") for i in range(3)])
    delivered_ok(base)
    ids = base["added"]
    await_members(stack, a, {f"u{i}-{t}@x.ru": f"U{i}" for i in range(3)})

    result = changes(
        stack,
        a,
        add=[contact(f"n{i}-{t}@x.ru", f"New {i}") for i in range(3)],
        update=[
            {"id": ids[0], **contact(f"u0-{t}@x.ru", "Renamed 0")},
            {"id": ids[1], **contact(f"u1b-{t}@x.ru", "U1")},
        ],
        delete=[ids[2]],
    )
    assert len(result["deliveries"]) == 1  # all six in one POST
    delivered_ok(result)
    await_members(
        stack,
        a,
        {
            **{f"n{i}-{t}@x.ru": f"New {i}" for i in range(3)},
            f"u0-{t}@x.ru": "Renamed 0",
            f"u1b-{t}@x.ru": "U1",
            f"u1-{t}@x.ru": None,
            f"u2-{t}@x.ru": None,
        },
    )


def test_changed_email_old_leaves_only_this_account_new_joins_with_name(
    stack: Stack, accounts: Any
) -> None:
    a, b = accounts
    t = tag()
    old, new = f"old-{t}@x.ru", f"new-{t}@x.ru"
    (cid,) = changes(stack, a, add=[contact(old, "Olga")])["added"]
    changes(stack, b, add=[contact(old, "Olga in B")])
    await_members(stack, a, {old: "Olga"})
    await_members(stack, b, {old: "Olga in B"})
    delivered_ok(changes(stack, a, update=[{"id": cid, **contact(new, "Olga")}]))
    await_members(stack, a, {new: "Olga", old: None})
    assert old in members(stack, b)


def test_shared_address_stays_when_one_holder_is_deleted(stack: Stack, accounts: Any) -> None:
    a, _ = accounts
    t = tag()
    shared = f"shared-{t}@x.ru"
    first, second = changes(stack, a, add=[contact(shared, "One"), contact(shared, "Two")])["added"]
    await_members(stack, a, {shared: "Two"})
    marker = f"marker-{t}@x.ru"
    delivered_ok(changes(stack, a, delete=[first], add=[contact(marker, "M")]))
    await_members(stack, a, {marker: "M"})
    assert shared in members(stack, a)
    delivered_ok(changes(stack, a, delete=[second]))
    await_members(stack, a, {shared: None})


def test_accounts_sharing_an_address_stay_isolated(stack: Stack, accounts: Any) -> None:
    a, b = accounts
    t = tag()
    same = f"same-{t}@x.ru"
    (in_a,) = changes(stack, a, add=[contact(same, "A")])["added"]
    changes(stack, b, add=[contact(same, "B")])
    await_members(stack, a, {same: "A"})
    await_members(stack, b, {same: "B"})
    delivered_ok(changes(stack, a, delete=[in_a]))
    await_members(stack, a, {same: None})
    assert members(stack, b)[same]["fields"]["Name"] == "B"


def test_role_address_is_reported_per_row_while_the_rest_imports(
    stack: Stack, accounts: Any
) -> None:
    from shared.db import get_database

    a, _ = accounts
    t = tag()
    role, fine = f"info@role-{t}.ru", f"fine-{t}@x.ru"
    delivered_ok(changes(stack, a, add=[contact([role, f"ok-{t}@x.ru"], "R"), contact(fine, "F")]))
    await_members(stack, a, {fine: "F", f"ok-{t}@x.ru": "R"})
    row = wait_for(
        lambda: get_database().fetch_one(
            "SELECT state, error_code, error_message FROM list_members "
            "WHERE account_id = %s AND email = %s AND state = 'failed'",
            (a.account_id, role),
        ),
        what="failed row recorded",
    )
    assert row["error_code"] and row["error_message"]
    assert role not in members(stack, a)


def test_two_thousand_updates_cost_at_most_ten_imports(stack: Stack, accounts: Any) -> None:
    _, b = accounts
    ids = changes(stack, b, generate=2000, notify=False)["added"]
    t = tag()
    calls_url = f"{unisender_url(stack)}/_sandbox/keys/{b.api_key}/calls"
    requests.delete(calls_url, timeout=5).raise_for_status()
    for start in range(0, 2000, 50):  # a burst of 40 webhook POSTs, 50 updates each
        chunk = ids[start : start + 50]
        result = changes(
            stack, b, update=[{"id": cid, "name": f"Burst {t} {cid}"} for cid in chunk]
        )
        delivered_ok(result)

    def all_renamed() -> bool:
        now = members(stack, b)
        return (
            sum(1 for c in now.values() if c["fields"].get("Name", "").startswith(f"Burst {t}"))
            == 2000
        )

    wait_for(all_renamed, timeout=60, interval=0.5, what="2000 updates applied")
    counts = requests.get(calls_url, timeout=5).json()["counts"]
    assert counts.get("importContacts", 0) <= 10, counts


def test_forged_destination_and_malformed_body_change_nothing(stack: Stack, accounts: Any) -> None:
    from shared.jobqueue import get_queue

    a, _ = accounts
    before = members(stack, a)
    jobs_before = get_queue().tube_stats("contact-events")["total-jobs"]
    body = {
        "account[id]": str(a.account_id),
        "contacts[add][0][id]": "123",
        "contacts[add][0][name]": "Evil",
        "contacts[add][0][custom_fields][0][code]": "EMAIL",
        "contacts[add][0][custom_fields][0][values][0][value]": "evil@x.ru",
        "contacts[add][0][type]": "contact",
    }
    prefix, secret = a.webhook_destination.rsplit("/", 1)
    wrong = requests.post(f"{prefix}/{secret[:-2]}xx", data=body, timeout=5)
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "webhook_not_found"
    other = requests.post(
        f"{stack.gateway_url}/webhook/{a.account_id + 1}/{secret}", data=body, timeout=5
    )
    assert other.status_code == 404
    bare = requests.post(f"{stack.gateway_url}/webhook", data=body, timeout=5)
    assert bare.status_code == 404 and bare.json()["error"]["code"] == "webhook_not_found"
    for bad in (b"contacts[add][0][id]=abc", b"contacts[add]=1", b"\xff\xfe", b'{"a": 1}'):
        resp = requests.post(
            a.webhook_destination,
            data=bad,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=5,
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "malformed_webhook"
    mismatch = requests.post(a.webhook_destination, data={**body, "account[id]": "1"}, timeout=5)
    assert mismatch.status_code == 400
    assert get_queue().tube_stats("contact-events")["total-jobs"] == jobs_before
    assert members(stack, a) == before


def test_queue_down_means_503_and_the_resend_loses_nothing(
    stack: Stack, accounts: Any, beanstalkd_server: Beanstalkd
) -> None:
    a, _ = accounts
    t = tag()
    email = f"outage-{t}@x.ru"
    from shared.jobqueue import get_queue

    def idle() -> bool:
        stats = get_queue().tube_stats("contact-events")
        return stats["current-jobs-ready"] + stats["current-jobs-reserved"] == 0

    wait_for(idle, what="contact-events drained")
    beanstalkd_server.stop()
    try:
        result = changes(stack, a, add=[contact(email, "Outage")])
        assert [d["status"] for d in result["deliveries"]] == [503]
        (record,) = [
            d
            for d in amo_control(
                stack, "GET", "/deliveries", params={"account_id": a.account_id}, timeout=60
            )
            if d["id"] == result["deliveries"][0]["id"]
        ]
    finally:
        beanstalkd_server.start()
    # amoCRM retries the same body later.
    resend = requests.post(
        record["destination"],
        data=record["body"],
        headers={"User-Agent": "amoCRM-WebHook-client/1.0"},
        timeout=5,
    )
    assert resend.status_code == 200, resend.text
    try:
        await_members(stack, a, {email: "Outage"}, timeout=30)
    except AssertionError:
        log = stack.workdir / "worker-contact-events.log"
        print(log.read_text()[-4000:] if log.exists() else "no worker log")
        raise


def test_delete_then_restore_readds(stack: Stack, accounts: Any) -> None:
    a, _ = accounts
    email = f"phoenix-{tag()}@x.ru"
    (cid,) = changes(stack, a, add=[contact(email, "Phoenix")])["added"]
    await_members(stack, a, {email: "Phoenix"})
    delivered_ok(changes(stack, a, delete=[cid]))
    await_members(stack, a, {email: None})
    delivered_ok(changes(stack, a, restore=[cid]))
    await_members(stack, a, {email: "Phoenix"})
