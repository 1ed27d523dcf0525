"""`amosync demo` walks the newcomer's flow against a running stack, in sandbox mode only."""

from __future__ import annotations

import re
import secrets

import pytest
from typer.testing import CliRunner

from cli.main import app
from devstack.stack import Stack
from testing.accounts import stored_account
from testing.widget import list_members

pytestmark = pytest.mark.e2e


def _urls(stack: Stack) -> list[str]:
    return [
        "--gateway-url",
        stack.gateway_url,
        "--amocrm-url",
        f"http://127.0.0.1:{stack.ports.amocrm}",
        "--unisender-url",
        f"http://127.0.0.1:{stack.ports.unisender}",
    ]


def test_demo_installs_connects_and_syncs(stack: Stack, isolated_env: dict[str, str]) -> None:
    subdomain = f"demo{secrets.token_hex(4)}"
    key = f"demo{secrets.token_hex(8)}"
    result = CliRunner().invoke(
        app,
        ["demo", *_urls(stack), "--subdomain", subdomain, "--api-key", key, "--contacts", "2"],
    )
    assert result.exit_code == 0, result.output
    for step in range(6):
        assert f"{step}. " in result.output
    account_id = int(re.search(r"account (\d+) at", result.output).group(1))  # type: ignore[union-attr]
    row = stored_account(account_id)
    assert row is not None and row["name"] == subdomain and row["status"] == "active"
    list_id = int(re.search(r"Unisender list (\d+)", result.output).group(1))  # type: ignore[union-attr]
    members = list_members(stack, key, list_id)
    assert len([e for e in members if e.startswith("demo")]) == 2
    assert f"{stack.gateway_url}/status" in result.output


def test_demo_refuses_outside_sandbox_mode(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, isolated_env: dict[str, str]
) -> None:
    from testing.caches import reset_caches

    monkeypatch.setenv("SANDBOX_MODE", "false")
    reset_caches()
    result = CliRunner().invoke(app, ["demo", *_urls(stack)])
    assert result.exit_code == 1
    assert "SANDBOX_MODE=true" in result.output


def test_demo_says_when_the_stack_is_not_running(isolated_env: dict[str, str]) -> None:
    from devstack.stack import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app, ["demo", "--gateway-url", dead, "--amocrm-url", dead, "--unisender-url", dead]
    )
    assert result.exit_code == 1
    assert "make dev" in result.output
