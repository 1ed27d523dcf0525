"""Errors of the amoCRM client never repeat a request URL's query (it can carry a secret)."""

from __future__ import annotations

import socket

import pytest

from shared.amocrm.client import AmoCrmClient, StaticTokenProvider
from shared.amocrm.errors import Transient
from shared.ratelimit import IntervalThrottle


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_amocrm_error_does_not_repeat_the_webhook_destination() -> None:
    secret = "s3cr3t-webhook-segment-0123456789"
    client = AmoCrmClient(
        f"http://127.0.0.1:{_closed_port()}",
        StaticTokenProvider("token"),
        throttle=IntervalThrottle(rate=1000),
        max_attempts=1,
    )
    with pytest.raises(Transient) as caught:
        client.list_webhooks(f"https://amosync.example/webhook/42/{secret}")
    assert "ConnectionError" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.args)
