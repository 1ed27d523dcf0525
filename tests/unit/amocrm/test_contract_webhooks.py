"""Contract: webhook delivery follows amoCRM's rules (reference §4.2, issue 12 item 8).

An invalid answer (not 100-299 within the timeout) is redelivered (2nd and 3rd attempts after
any failure, 4th and 5th only after a 499/5xx); more than N invalid answers within the window
disable the hook, `GET /api/v4/webhooks` says `disabled: true`, nothing more is delivered to it,
and re-subscribing brings it back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from .conftest import Receiver, Sandbox

pytestmark = pytest.mark.unit

EVENTS = ["add_contact", "update_contact"]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Hooked:
    """An account subscribed to `receiver`, with a raw API session (to see the JSON as sent)."""

    def __init__(self, sandbox: Sandbox, receiver: Receiver) -> None:
        self.sandbox, self.receiver = sandbox, receiver
        self.destination = f"{receiver.url}/hook?k=s"
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {sandbox.tokens()['access_token']}"
        self.subscribe()

    def subscribe(self) -> dict[str, Any]:
        resp = self.api.post(
            f"{self.sandbox.url}/api/v4/webhooks",
            json={"destination": self.destination, "settings": EVENTS},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def hook(self) -> dict[str, Any]:
        resp = self.api.get(
            f"{self.sandbox.url}/api/v4/webhooks",
            params={"filter[destination]": self.destination},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        (hook,) = resp.json()["_embedded"]["webhooks"]
        return dict(hook)

    def change(self) -> None:
        self.sandbox.changes(add=[{"name": "Ann"}])

    def attempts(self) -> list[dict[str, Any]]:
        return list(self.sandbox.control("GET", "/deliveries"))


def test_a_failed_delivery_is_redelivered_until_it_succeeds(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.configure(webhook_retry_delays="0.2,0.2,0.2,0.2")
    hooked = Hooked(sandbox, receiver)
    receiver.status = 503
    hooked.change()
    wait_for(lambda: len(receiver.received) == 2)
    receiver.status = 200
    wait_for(lambda: len(receiver.received) == 3)
    time.sleep(0.6)
    assert len(receiver.received) == 3  # delivered: no more attempts
    first, second, third = hooked.attempts()
    assert [d["attempt"] for d in (first, second, third)] == [1, 2, 3]
    assert [d["status"] for d in (first, second, third)] == [503, 503, 200]
    assert second["retry_of"] == first["id"] and third["retry_of"] == second["id"]
    assert len({hit["raw"] for hit in receiver.received}) == 1  # the same body every time


@pytest.mark.parametrize(("status", "attempts"), [(404, 3), (500, 5)])
def test_the_fourth_and_fifth_attempts_follow_only_server_errors(
    sandbox: Sandbox, receiver: Receiver, status: int, attempts: int
) -> None:
    sandbox.configure(webhook_retry_delays="0.1,0.1,0.1,0.1")
    hooked = Hooked(sandbox, receiver)
    receiver.status = status
    hooked.change()
    wait_for(lambda: len(receiver.received) == attempts)
    time.sleep(0.5)
    assert len(receiver.received) == attempts
    assert [d["attempt"] for d in hooked.attempts()] == list(range(1, attempts + 1))


def test_an_unreachable_destination_is_retried_too(sandbox: Sandbox) -> None:
    sandbox.configure(webhook_retry_delays="0.1,0.1")
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {sandbox.tokens()['access_token']}"
    # A port nothing listens on: a connection error is an invalid answer.
    api.post(
        f"{sandbox.url}/api/v4/webhooks",
        json={"destination": "http://127.0.0.1:9/hook", "settings": EVENTS},
        timeout=10,
    ).raise_for_status()
    sandbox.changes(add=[{"name": "Ann"}])
    # A redelivery is logged when scheduled (status and error still None) and filled when sent.
    wait_for(lambda: sum(1 for d in sandbox.control("GET", "/deliveries") if d["error"]) == 3)
    time.sleep(0.3)
    assert [d["attempt"] for d in sandbox.control("GET", "/deliveries")] == [1, 2, 3]


def test_too_many_failures_disable_the_hook(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_disable_after=3, webhook_retry_delays="")
    hooked = Hooked(sandbox, receiver)
    receiver.status = 500
    for _ in range(3):
        hooked.change()
    assert hooked.hook()["disabled"] is False  # 3 failures: not MORE than 3 yet
    hooked.change()
    hook = hooked.hook()
    assert hook["disabled"] is True
    assert len(receiver.received) == 4
    receiver.status = 200
    hooked.change()
    assert len(receiver.received) == 4  # a disabled hook gets nothing
    # Re-subscribing is how it comes back.
    assert hooked.subscribe()["disabled"] is False
    hooked.change()
    assert len(receiver.received) == 5
    assert hooked.hook()["disabled"] is False


def test_redeliveries_count_towards_disabling(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_disable_after=2, webhook_retry_delays="0.1,0.1,0.1,0.1")
    hooked = Hooked(sandbox, receiver)
    receiver.status = 502
    hooked.change()
    wait_for(lambda: hooked.hook()["disabled"] is True)
    time.sleep(0.4)
    assert len(receiver.received) == 3  # the 3rd failure disabled it: no 4th attempt


def test_failures_older_than_the_window_do_not_count(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_disable_after=2, webhook_disable_window=0.5, webhook_retry_delays="")
    hooked = Hooked(sandbox, receiver)
    receiver.status = 500
    hooked.change()
    hooked.change()
    time.sleep(0.6)
    hooked.change()
    assert hooked.hook()["disabled"] is False


def test_a_success_between_failures_does_not_reset_the_count(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    # "More than N invalid answers in the last 2 h" counts them all, not a streak.
    sandbox.configure(webhook_disable_after=2, webhook_retry_delays="")
    hooked = Hooked(sandbox, receiver)
    for status in (500, 500, 200, 500):
        receiver.status = status
        hooked.change()
    assert hooked.hook()["disabled"] is True


def test_a_hook_can_be_disabled_through_the_control_api(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    hooked = Hooked(sandbox, receiver)
    hook_id = hooked.hook()["id"]
    path = f"/accounts/{sandbox.account_id}/webhooks/{hook_id}"
    assert sandbox.control("PATCH", path, json={"disabled": True})["disabled"] is True
    assert hooked.hook()["disabled"] is True
    hooked.change()
    assert receiver.received == []


def test_reset_drops_pending_redeliveries(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.configure(webhook_retry_delays="0.5")
    hooked = Hooked(sandbox, receiver)
    receiver.status = 500
    hooked.change()
    sandbox.control("POST", "/reset")
    time.sleep(0.8)
    assert len(receiver.received) == 1
