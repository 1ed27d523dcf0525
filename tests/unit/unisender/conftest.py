"""The Unisender emulator served in-thread on a free port, and clients pointed at it."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from sandbox.unisender import SandboxConfig, create_app
from sandbox.unisender.state import RUNTIME_SETTINGS
from shared.unisender import UnisenderClient


class SandboxServer:
    """A running emulator and a thin wrapper over its /_sandbox control API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api_url = f"{url}/en/api"
        self.http = requests.Session()

    def control(self, verb: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(verb, f"{self.url}/_sandbox{path}", timeout=5, **kwargs)
        response.raise_for_status()
        return response.json()

    def new_key(self, **seed: Any) -> str:
        return str(self.control("POST", "/keys", json=seed)["api_key"])

    def state(self, key: str) -> dict[str, Any]:
        return dict(self.control("GET", f"/keys/{key}"))

    def calls(self, key: str, method: str | None = None) -> dict[str, Any]:
        params = {"method": method} if method else {}
        return dict(self.control("GET", f"/keys/{key}/calls", params=params))

    def fault(self, **spec: Any) -> dict[str, Any]:
        return dict(self.control("POST", "/faults", json=spec))

    def configure(self, **settings: Any) -> None:
        self.control("PATCH", "/config", json=settings)

    def api(self, method: str, data: Any = None, **kwargs: Any) -> Any:
        """A raw API call (form-encoded POST), for behaviour the client never exercises."""
        response = self.http.post(f"{self.api_url}/{method}", data=data, timeout=5, **kwargs)
        assert response.status_code == 200
        return response.json()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    app = create_app(SandboxConfig())
    # Threaded so a `hang` fault stalls only its own request, not the retry that follows it.
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SandboxServer(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    thread.join(5)


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    defaults = SandboxConfig()
    yield sandbox_server
    sandbox_server.control("DELETE", "/faults")
    # Every test of the session calls from 127.0.0.1: without a fresh window the per-IP limit
    # (1,200/min, the real rule) would count the whole session as one minute's traffic.
    sandbox_server.control("DELETE", "/rate_limits")
    sandbox_server.configure(
        **{name: getattr(defaults, name) for name in sorted(RUNTIME_SETTINGS)},
    )


@pytest.fixture
def api_key(sandbox: SandboxServer) -> str:
    return sandbox.new_key()


@pytest.fixture
def sleeps() -> list[float]:
    """Delays the client asked to sleep, recorded instead of slept so tests stay fast."""
    return []


@pytest.fixture
def client(sandbox: SandboxServer, api_key: str, sleeps: list[float]) -> Iterator[UnisenderClient]:
    with UnisenderClient(
        api_key, base_url=sandbox.api_url, sleep=sleeps.append, timeout=(2, 5)
    ) as unisender:
        yield unisender


class HookReceiver:
    """A local HTTP endpoint standing in for amosync's hook route: records every POST body and
    answers with the statuses queued in `answers` (then 200), optionally after a delay."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.received = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.received:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.bodies.append(json.loads(raw or b"null"))
                    receiver.received.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/unisender/hook?secret=s1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        """Block until `count` bodies arrived; fail the test if they do not."""
        deadline = time.monotonic() + timeout
        with self.received:
            while len(self.bodies) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {count} hook bodies, got {len(self.bodies)}"
                self.received.wait(left)
            return list(self.bodies)


@pytest.fixture
def hook_receiver() -> Iterator[HookReceiver]:
    receiver = HookReceiver()
    yield receiver
    receiver.server.shutdown()
