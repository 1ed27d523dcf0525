"""Contract: setHook, listHooks, removeHook, hook delivery with retries, exportContacts (issue 13).

Docs: JSON to `hook_url`; anything but HTTP 200 within 3 s is retried every 10 minutes for 24 h
with `retry_count` (+1 per resend); then the hook is `stopped` until `setHook ... status=active`.
The intervals are shrunk here through the runtime config.
"""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest

from tests.unit.unisender.conftest import HookReceiver, SandboxServer

pytestmark = pytest.mark.unit


def _form(key: str, **args: Any) -> dict[str, Any]:
    return {"format": "json", "api_key": key, **args}


def _set_hook(sandbox: SandboxServer, key: str, url: str, *events: str, **extra: str) -> Any:
    form = _form(key, hook_url=url, event_format="json_post", **extra)
    form.update({f"events[{i}]": e for i, e in enumerate(events)})
    return sandbox.api("setHook", form)


def _simulate(sandbox: SandboxServer, key: str, **body: Any) -> Any:
    return sandbox.control("POST", f"/keys/{key}/simulate", json=body)


def _events(bodies: list[Any]) -> list[dict[str, Any]]:
    return [e for b in bodies for u in b["events_by_user"] for e in u["events"]]


def _deliveries(sandbox: SandboxServer, key: str) -> list[dict[str, Any]]:
    return list(sandbox.control("GET", "/deliveries", params={"api_key": key})["deliveries"])


def _wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def account(sandbox: SandboxServer) -> tuple[str, int]:
    key = sandbox.new_key(
        login="acme",
        lists=["L"],
        contacts=[{"email": f"p{i}@x.ru", "status": "active", "lists": ["L"]} for i in range(3)],
    )
    return key, sandbox.state(key)["lists"][0]["id"]


def test_set_list_replace_and_remove_hooks(
    sandbox: SandboxServer, account: tuple[str, int]
) -> None:
    key, _ = account
    url = "http://127.0.0.1:9/hook?secret=a"
    assert _set_hook(sandbox, key, url, "subscribe_status") == {"result": {}}
    assert _set_hook(sandbox, key, url, "subscribe_status", "email_status") == {"result": {}}
    hooks = sandbox.api("listHooks", _form(key))["result"]
    assert [(h["hook_url"], h["events"], h["status"]) for h in hooks] == [
        (url, ["subscribe_status", "email_status"], "active")
    ]
    assert sandbox.api("removeHook", _form(key, hook_url=url)) == {"result": {}}
    assert sandbox.api("listHooks", _form(key)) == {"result": []}
    assert sandbox.api("removeHook", _form(key, hook_url=url))["code"] == "unspecified"


def test_set_hook_validates_its_arguments(sandbox: SandboxServer, account: tuple[str, int]) -> None:
    key, _ = account
    assert _set_hook(sandbox, key, "", "subscribe_status")["code"] == "invalid_arg"
    assert _set_hook(sandbox, key, "ftp://x/", "subscribe_status")["code"] == "invalid_arg"
    assert _set_hook(sandbox, key, "http://x/")["code"] == "invalid_arg"
    assert _set_hook(sandbox, key, "http://x/", "everything")["code"] == "invalid_arg"
    bad_status = _set_hook(sandbox, key, "http://x/", "email_status", status="stopped")
    assert bad_status["code"] == "invalid_arg"


def test_unverified_hook_admin_methods_can_be_switched_off(
    sandbox: SandboxServer, account: tuple[str, int]
) -> None:
    key, _ = account
    sandbox.configure(hook_admin_methods=False)
    assert sandbox.api("listHooks", _form(key))["code"] == "unknown_method"
    assert sandbox.api("removeHook", _form(key, hook_url="http://x/"))["code"] == "unknown_method"
    # The documented way to switch a hook off still works.
    assert _set_hook(sandbox, key, "http://x/", "subscribe_status", status="disabled") == {
        "result": {}
    }


def test_unsubscribe_is_delivered_in_the_payload_format(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    _simulate(sandbox, key, event="unsubscribe", emails=["p0@x.ru", "p1@x.ru"], list_ids=[lid])
    (body,) = hook_receiver.wait_for(1)
    assert "retry_count" not in body
    assert [u["login"] for u in body["events_by_user"]] == ["acme"]
    events = _events([body])
    assert [(e["event_name"], e["event_data"]) for e in events] == [
        ("subscribe_status", {"email": "p0@x.ru", "status": "unsubscribed", "list_id": lid}),
        ("subscribe_status", {"email": "p1@x.ru", "status": "unsubscribed", "list_id": lid}),
    ]
    assert all(len(e["event_time"]) == 19 for e in events)  # YYYY-MM-DD hh:mm:ss
    assert key not in repr(body)  # the API key never travels in a hook body


def test_bounce_and_complaint_are_email_status_events(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, _ = account
    _set_hook(sandbox, key, hook_receiver.url, "email_status", single_event="1")
    _simulate(sandbox, key, event="hard_bounce", email="p0@x.ru", campaign_id=77)
    _simulate(sandbox, key, event="complaint", email="p1@x.ru")
    _simulate(sandbox, key, event="unsubscribe", email="p2@x.ru")  # not asked for: not sent
    bodies = hook_receiver.wait_for(2)
    statuses = {e["event_data"]["email"]: e["event_data"] for e in _events(bodies)}
    assert statuses == {
        "p0@x.ru": {"email": "p0@x.ru", "status": "err_user_unknown", "campaign_id": 77},
        "p1@x.ru": {"email": "p1@x.ru", "status": "ok_fbl"},
    }
    time.sleep(0.2)
    assert len(hook_receiver.bodies) == 2
    contacts = {c["email"]: c for c in sandbox.state(key)["contacts"]}
    assert contacts["p0@x.ru"]["availability"] == "unreachable"
    assert contacts["p1@x.ru"]["status"] == "blocked"


def test_api_unsubscribe_is_reported_too(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    args = _form(key, contact_type="email", contact="p0@x.ru", list_ids=str(lid))
    assert sandbox.api("unsubscribe", args) == {"result": {}}
    (body,) = hook_receiver.wait_for(1)
    assert _events([body])[0]["event_data"]["status"] == "unsubscribed"


def test_failed_deliveries_are_retried_with_retry_count(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    sandbox.configure(hook_retry_interval_seconds=0.2, hook_retry_period_seconds=30)
    hook_receiver.answers = [500, 204]  # only 200 counts as delivered
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    _simulate(sandbox, key, event="unsubscribe", email="p0@x.ru", list_ids=[lid])
    bodies = hook_receiver.wait_for(3)
    assert [b.get("retry_count") for b in bodies] == [None, 1, 2]
    assert len({repr(_events([b])) for b in bodies}) == 1  # the same events each time
    _wait_until(lambda: _deliveries(sandbox, key)[-1]["state"] == "delivered")
    attempts = _deliveries(sandbox, key)[-1]["attempts"]
    assert [a["status"] for a in attempts] == [500, 204, 200]


def test_a_slow_receiver_counts_as_failed(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    sandbox.configure(hook_timeout_seconds=0.2, hook_retry_interval_seconds=60)
    hook_receiver.delay = 0.6
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    _simulate(sandbox, key, event="unsubscribe", email="p0@x.ru", list_ids=[lid])
    _wait_until(lambda: bool(_deliveries(sandbox, key)[-1]["attempts"]))
    delivery = _deliveries(sandbox, key)[-1]
    assert (delivery["state"], delivery["attempts"][0]["error"]) == ("pending", "ReadTimeout")


def test_hook_stops_after_the_retry_period_and_can_be_reactivated(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    sandbox.configure(hook_retry_interval_seconds=0.1, hook_retry_period_seconds=0.45)
    hook_receiver.answers = [503] * 10
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    _simulate(sandbox, key, event="unsubscribe", email="p0@x.ru", list_ids=[lid])
    _wait_until(lambda: sandbox.api("listHooks", _form(key))["result"][0]["status"] == "stopped")
    assert _deliveries(sandbox, key)[-1]["state"] == "given_up"
    tried = len(hook_receiver.bodies)
    # Every 0.1 s within 0.45 s: 5 tries on an idle machine, fewer when the receiver is slow.
    assert 2 <= tried <= 5
    # While stopped, new events are lost (a receiver must read them back with exportContacts).
    _simulate(sandbox, key, event="unsubscribe", email="p1@x.ru", list_ids=[lid])
    time.sleep(0.3)
    assert len(hook_receiver.bodies) == tried
    assert _deliveries(sandbox, key)[-1]["state"] == "dropped"
    hook_receiver.answers = []
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status", status="active")
    _simulate(sandbox, key, event="unsubscribe", email="p2@x.ru", list_ids=[lid])
    bodies = hook_receiver.wait_for(tried + 1)
    assert _events([bodies[-1]])[0]["event_data"]["email"] == "p2@x.ru"


def test_sync_export_returns_statuses_per_list(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(
        lists=["A", "B"],
        contacts=[
            {"email": "on@x.ru", "status": "active", "lists": ["A", "B"], "fields": {"Name": "On"}},
            {"email": "half@x.ru", "status": "active", "lists": ["A", "B"]},
            {"email": "gone@x.ru", "status": "unsubscribed", "lists": ["A"]},
            {"email": "elsewhere@x.ru", "status": "active", "lists": ["B"]},
        ],
    )
    a, b = (lst["id"] for lst in sandbox.state(key)["lists"])
    sandbox.control(
        "POST", f"/keys/{key}/unsubscribe", json={"email": "half@x.ru", "list_ids": [a]}
    )
    names = ["email", "email_status", "email_list_ids", "email_unsubscribed_list_ids", "Name"]
    form = _form(key, list_id=str(a), **{f"field_names[{i}]": n for i, n in enumerate(names)})
    result = sandbox.api("exportContacts", form)["result"]
    assert result["field_names"] == names
    rows = {r[0]: r for r in result["data"]}
    assert rows == {
        "on@x.ru": ["on@x.ru", "active", f"{a},{b}", "", "On"],
        "half@x.ru": ["half@x.ru", "active", f"{a},{b}", str(a), ""],
        "gone@x.ru": ["gone@x.ru", "unsubscribed", str(a), str(a), ""],
    }
    page = sandbox.api("exportContacts", {**form, "offset": "1", "limit": "1"})["result"]["data"]
    assert page == [result["data"][1]]
    assert sandbox.api("exportContacts", {**form, "limit": "1001"})["code"] == "invalid_arg"
    assert sandbox.api("exportContacts", _form(key, **{"field_names[0]": "nope"}))["code"] == (
        "invalid_arg"
    )


def test_async_export_task_file_and_notify_url(
    sandbox: SandboxServer, account: tuple[str, int], hook_receiver: HookReceiver
) -> None:
    key, lid = account
    sandbox.configure(export_task_seconds=0.3)
    sandbox.control(
        "POST", f"/keys/{key}/unsubscribe", json={"email": "p1@x.ru", "list_ids": [lid]}
    )
    assert sandbox.api("async/exportContacts", _form(key))["code"] == "invalid_arg"  # notify_url
    form = _form(
        key,
        notify_url=hook_receiver.url,
        list_id=str(lid),
        **{"field_names[]": ["email", "email_status", "email_unsubscribed_list_ids"]},
    )
    started = sandbox.api("async/exportContacts", form)["result"]
    assert started["status"] == "new"
    task = _form(key, task_uuid=started["task_uuid"])
    assert sandbox.api("async/getTaskResult", task)["result"]["status"] in ("new", "processing")
    (notice,) = hook_receiver.wait_for(1)
    assert (notice["task_uuid"], notice["status"]) == (started["task_uuid"], "completed")
    done = sandbox.api("async/getTaskResult", task)["result"]
    assert done["status"] == "completed"
    text = sandbox.http.get(done["file_to_download"], timeout=5).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["email", "email_status", "email_unsubscribed_list_ids"]
    assert sorted(rows[1:]) == [
        ["p0@x.ru", "active", ""],
        ["p1@x.ru", "active", str(lid)],
        ["p2@x.ru", "active", ""],
    ]
    unknown = sandbox.api("async/getTaskResult", _form(key, task_uuid="nope"))
    assert unknown["code"] == "invalid_arg"


def test_ten_thousand_unsubscribes_at_once_reach_the_hook(
    sandbox: SandboxServer, hook_receiver: HookReceiver
) -> None:
    # The issue-13 burst: every event arrives, none is lost to the bounded delivery log.
    emails = [f"u{i}@x.ru" for i in range(10_000)]
    key = sandbox.new_key(
        lists=["L"], contacts=[{"email": e, "status": "active", "lists": ["L"]} for e in emails]
    )
    lid = sandbox.state(key)["lists"][0]["id"]
    _set_hook(sandbox, key, hook_receiver.url, "subscribe_status")
    _simulate(sandbox, key, event="unsubscribe", emails=emails, list_ids=[lid])
    (body,) = hook_receiver.wait_for(1, timeout=30)
    assert sorted(e["event_data"]["email"] for e in _events([body])) == sorted(emails)
