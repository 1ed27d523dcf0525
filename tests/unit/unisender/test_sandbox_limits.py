"""Contract: the emulator limits calls per API key AND per client IP, as Unisender does (issue 12).

Docs: 1,200 calls/min per key and per IP, two counters, two codes
(`api_call_limit_exceeded_for_api_key` / `api_call_limit_exceeded_for_ip`), the usual
`{"error", "code"}` envelope on HTTP 200. Small limits here keep the tests fast; the defaults are
pinned by `test_defaults_are_the_documented_rule`.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any

import pytest

from sandbox.unisender import SandboxConfig, create_app
from tests.unit.unisender.conftest import SandboxServer

pytestmark = pytest.mark.unit

LIMIT_CODES = {"api_call_limit_exceeded_for_api_key", "api_call_limit_exceeded_for_ip"}


def _form(key: str, **args: Any) -> dict[str, Any]:
    return {"format": "json", "api_key": key, **args}


def call_from(
    sandbox: SandboxServer, source_ip: str, method: str, form: dict[str, Any], lang: str = "en"
) -> Any:
    """A form POST whose TCP peer is `source_ip` (any 127.x address works on loopback)."""
    parsed = urllib.parse.urlsplit(sandbox.url)
    conn = http.client.HTTPConnection(
        parsed.hostname or "127.0.0.1", parsed.port, timeout=5, source_address=(source_ip, 0)
    )
    try:
        body = urllib.parse.urlencode(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", f"/{lang}/api/{method}", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def test_defaults_are_the_documented_rule() -> None:
    config = SandboxConfig.from_env({})
    assert (config.rate_limit_per_min, config.ip_rate_limit_per_min) == (1200, 1200)
    assert config.rate_window_seconds == 60


def test_one_ip_shares_its_budget_across_keys(sandbox: SandboxServer) -> None:
    first, second = sandbox.new_key(), sandbox.new_key()
    sandbox.configure(ip_rate_limit_per_min=3, rate_limit_per_min=100)
    assert "result" in sandbox.api("getLists", _form(first))
    assert "result" in sandbox.api("getLists", _form(first))
    assert "result" in sandbox.api("getLists", _form(second))
    refused = sandbox.api("getLists", _form(second))
    # The real envelope: error text + code, nothing else, on HTTP 200.
    assert set(refused) == {"error", "code"}
    assert refused["code"] == "api_call_limit_exceeded_for_ip"
    assert "3 calls" in refused["error"]
    # Another egress IP has its own budget.
    assert "result" in call_from(sandbox, "127.0.0.2", "getLists", _form(second))


def test_one_egress_ip_mode_counts_every_caller_as_one_ip(
    sandbox: SandboxServer, api_key: str
) -> None:
    # For a compose stack: containers reach the emulator from several addresses, the real
    # service from one egress IP.
    sandbox.configure(ip_rate_limit_per_min=2, one_egress_ip=True)
    assert "result" in call_from(sandbox, "127.0.0.1", "getLists", _form(api_key))
    assert "result" in call_from(sandbox, "127.0.0.5", "getLists", _form(api_key))
    refused = call_from(sandbox, "127.0.0.6", "getLists", _form(api_key))
    assert refused["code"] == "api_call_limit_exceeded_for_ip"
    assert sandbox.control("GET", "/rate_limits")["ip"] == {"egress": 2}


def test_one_key_is_limited_across_ips(sandbox: SandboxServer, api_key: str) -> None:
    sandbox.configure(rate_limit_per_min=2, ip_rate_limit_per_min=100)
    assert "result" in call_from(sandbox, "127.0.0.1", "getLists", _form(api_key))
    assert "result" in call_from(sandbox, "127.0.0.3", "getLists", _form(api_key))
    refused = call_from(sandbox, "127.0.0.4", "getLists", _form(api_key))
    assert refused["code"] == "api_call_limit_exceeded_for_api_key"
    other = sandbox.new_key()
    assert "result" in call_from(sandbox, "127.0.0.4", "getLists", _form(other))


def test_wrong_keys_count_against_the_ip(sandbox: SandboxServer, api_key: str) -> None:
    sandbox.configure(ip_rate_limit_per_min=2)
    assert sandbox.api("getLists", _form("wrong"))["code"] == "invalid_api_key"
    assert sandbox.api("getLists", _form("wrong"))["code"] == "invalid_api_key"
    assert sandbox.api("getLists", _form(api_key))["code"] == "api_call_limit_exceeded_for_ip"


def test_refused_calls_do_not_count_and_the_window_slides(
    sandbox: SandboxServer, api_key: str
) -> None:
    sandbox.configure(rate_limit_per_min=2, rate_window_seconds=0.5)
    for _ in range(2):
        assert "result" in sandbox.api("getLists", _form(api_key))
    for _ in range(5):  # hammering while blocked does not extend the block
        assert sandbox.api("getLists", _form(api_key))["code"] in LIMIT_CODES
    time.sleep(0.6)
    assert "result" in sandbox.api("getLists", _form(api_key))


def test_control_route_shows_and_resets_the_windows(sandbox: SandboxServer, api_key: str) -> None:
    sandbox.configure(rate_limit_per_min=2)
    sandbox.api("getLists", _form(api_key))
    sandbox.api("getLists", _form(api_key))
    windows = sandbox.control("GET", "/rate_limits")
    assert windows["api_key"][api_key] == 2
    assert windows["ip"]["127.0.0.1"] >= 2
    assert sandbox.api("getLists", _form(api_key))["code"] == "api_call_limit_exceeded_for_api_key"
    assert sandbox.control("DELETE", "/rate_limits") == {"api_key": {}, "ip": {}}
    assert "result" in sandbox.api("getLists", _form(api_key))


def test_async_export_has_its_own_limit_of_20(sandbox: SandboxServer, api_key: str) -> None:
    # Docs: async/exportContacts 20 / 60 s "from one API key or IP address".
    sandbox.configure(export_task_seconds=60)
    args = _form(api_key, notify_url="http://127.0.0.1:9/never")
    for _ in range(20):
        assert "task_uuid" in sandbox.api("async/exportContacts", args)["result"]
    assert sandbox.api("async/exportContacts", args)["code"] in LIMIT_CODES
    assert "result" in sandbox.api("getLists", _form(api_key))  # other methods still work


@pytest.mark.parametrize(
    ("lang", "fragment"),
    [("en", "calls per"), ("ru", "вызовов"), ("ua", "викликів"), ("it", "chiamate")],
)
def test_limit_errors_speak_the_url_language(
    sandbox: SandboxServer, api_key: str, lang: str, fragment: str
) -> None:
    sandbox.configure(rate_limit_per_min=1)
    sandbox.http.post(f"{sandbox.url}/{lang}/api/getLists", data=_form(api_key), timeout=5)
    body = sandbox.http.post(
        f"{sandbox.url}/{lang}/api/getLists", data=_form(api_key), timeout=5
    ).json()
    assert body["code"] == "api_call_limit_exceeded_for_api_key"
    assert fragment in body["error"]


def test_environment_sets_both_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_UNISENDER_KEYS", "k1,k2")
    monkeypatch.setenv("SANDBOX_UNISENDER_RATE_LIMIT_PER_MIN", "5")
    monkeypatch.setenv("SANDBOX_UNISENDER_IP_RATE_LIMIT_PER_MIN", "1")
    monkeypatch.setenv("SANDBOX_UNISENDER_RATE_WINDOW_SECONDS", "30")
    web = create_app().test_client()
    assert web.post("/en/api/getLists", data=_form("k1")).get_json() == {"result": []}
    refused = web.post("/en/api/getLists", data=_form("k2")).get_json()
    assert refused["code"] == "api_call_limit_exceeded_for_ip"
    config = web.get("/_sandbox/config").get_json()
    assert (config["rate_limit_per_min"], config["rate_window_seconds"]) == (5, 30)
