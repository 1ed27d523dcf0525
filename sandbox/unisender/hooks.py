"""Unisender → receiver webhooks (`setHook`) and the background timer that delivers them.

Documented (reference §6a): JSON to `hook_url`; the receiver must answer HTTP 200 within 3 s;
otherwise Unisender retries every 10 minutes for 24 hours, adding `retry_count` (+1 per resend);
after 24 hours without success the hook's status becomes `stopped` (reactivate with
`setHook ... status=active`). `hook_url` identifies the hook: setHook with the same URL replaces it.

[unverified], with the choice the emulator makes:
- the `events[]` identifiers and the payload layout were cut off in the stored docs. The emulator
  sends `{"events_by_user": [{"login": ..., "events": [{"event_name", "event_time",
  "event_data"}]}]}` with `event_name` `subscribe_status` (a person unsubscribed from / subscribed
  to a list) or `email_status` (a letter's delivery status: `err_user_unknown` = hard bounce,
  `ok_fbl` = spam complaint, ...), and `retry_count` at the top level of a resent body only;
- no signature (`auth`) is sent: none is documented for the marketing API, so a receiver must
  authenticate by a secret in `hook_url` and cannot come to depend on one here;
- events that happen while a hook is stopped or disabled are dropped, not queued: a receiver
  must read what it missed back with `exportContacts`;
- only HTTP 200 counts as delivered (a 204 or a redirect is a failure).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

log = logging.getLogger(__name__)

# Event identifiers the emulator knows (see the module docstring: [unverified] names).
HOOK_EVENTS = frozenset({"subscribe_status", "email_status"})
EVENT_FORMATS = frozenset({"json_post"})
HOOK_STATUSES = frozenset({"active", "disabled"})  # `stopped` is set only by the service


@dataclass
class Hook:
    url: str
    events: list[str]
    event_format: str = "json_post"
    single_event: bool = False
    max_parallel: int = 10
    status: str = "active"  # active | disabled | stopped
    created_at: str = ""
    updated_at: str = ""
    stopped_at: str | None = None
    last_error: str | None = None
    in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hook_url": self.url,
            "events": list(self.events),
            "event_format": self.event_format,
            "single_event": int(self.single_event),
            "max_parallel": self.max_parallel,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "stopped_at": self.stopped_at,
            "last_error": self.last_error,
        }


@dataclass
class Delivery:
    """One body for one hook, tried until it is answered 200 or the retry period ends."""

    id: int
    api_key: str
    login: str
    hook_url: str
    events: list[dict[str, Any]]
    first_try: float  # monotonic
    retry_count: int = 0
    state: str = "pending"  # pending | delivered | given_up | dropped
    attempts: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "hook"  # hook | export_notify

    def body(self) -> dict[str, Any]:
        if self.kind == "export_notify":
            payload = dict(self.events[0])
        else:
            payload = {"events_by_user": [{"login": self.login, "events": self.events}]}
        if self.retry_count:
            payload["retry_count"] = self.retry_count
        return payload

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "hook_url": self.hook_url,
            "state": self.state,
            "retry_count": self.retry_count,
            "events": self.events,
            "attempts": list(self.attempts),
        }


class Timer:
    """Runs callables at monotonic times on a small thread pool (a daemon, lazily started)."""

    def __init__(self, workers: int = 8) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="uni-hook")
        self._thread: threading.Thread | None = None

    def at(self, when: float, task: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), task))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="uni-timer")
                self._thread.start()
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, task = heapq.heappop(self._heap)
            try:
                self._pool.submit(_safely, task)
            except RuntimeError:  # the interpreter is shutting down: nothing left to deliver to
                return


def _safely(task: Callable[[], None]) -> None:
    try:
        task()
    except Exception:  # a broken delivery must not kill the pool thread
        log.exception("sandbox unisender background task failed")


def post_json(url: str, body: dict[str, Any], timeout: float) -> tuple[int | None, str | None]:
    """POST `body`; (status, None) when answered, (None, error text) when not."""
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Unisender-Sandbox-Webhook/1.0"}
    try:
        response = requests.post(
            url, data=data, headers=headers, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as exc:
        return None, type(exc).__name__
    return response.status_code, None
