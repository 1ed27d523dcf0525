"""Settings derive instead of drifting; `amosync config` shows them masked and warns (issue 17)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from shared.config_report import warnings
from shared.settings import Settings
from testing.caches import reset_caches

pytestmark = pytest.mark.unit


@pytest.fixture
def unset_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PUBLIC_URL", "AMOCRM_REDIRECT_URI", "SANDBOX_AMOCRM_DISABLE_HOOK_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("unset_urls")
def test_urls_follow_gateway_port_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "8580")
    settings = Settings()
    assert settings.public_url == "http://localhost:8580"
    assert settings.amocrm_redirect_uri == "http://localhost:8580/auth"
    assert warnings(settings, {}) == []


@pytest.mark.usefixtures("unset_urls")
def test_redirect_uri_follows_an_explicit_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_URL", "https://sync.example.com/")
    monkeypatch.setenv("AMOCRM_REDIRECT_URI", "")  # empty in .env means "derive", not "empty"
    settings = Settings()
    assert settings.amocrm_redirect_uri == "https://sync.example.com/auth"
    assert warnings(settings, {}) == []


@pytest.mark.usefixtures("unset_urls")
def test_explicit_values_win_and_drift_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "8580")
    monkeypatch.setenv("PUBLIC_URL", "http://localhost:8080")
    monkeypatch.setenv("AMOCRM_REDIRECT_URI", "http://localhost:8080/oauth-back")
    settings = Settings()
    assert settings.public_url == "http://localhost:8080"
    found = warnings(
        settings, {"SANDBOX_AMOCRM_DISABLE_HOOK_URL": "http://localhost:8080/auth/disable"}
    )
    assert len(found) == 2, found  # the hook matches PUBLIC_URL: not a problem of its own
    assert "GATEWAY_PORT=8580" in found[0]
    assert "AMOCRM_REDIRECT_URI" in found[1]
    hook = warnings(settings, {"SANDBOX_AMOCRM_DISABLE_HOOK_URL": "http://elsewhere/auth/disable"})
    assert any("SANDBOX_AMOCRM_DISABLE_HOOK_URL" in line for line in hook)


def test_missing_secrets_are_refused_outside_sandbox_naming_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SANDBOX_MODE", "false")
    monkeypatch.setenv("ADMIN_TOKEN", "")
    monkeypatch.delenv("ENCRYPTION_KEY")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert "ADMIN_TOKEN" in message and "ENCRYPTION_KEY" in message
    assert "AMOCRM_CLIENT_SECRET" not in message  # set by the test environment
    monkeypatch.setenv("SANDBOX_MODE", "true")
    assert Settings().admin_token.get_secret_value() == ""


def test_config_masks_secrets_and_names_sources(
    monkeypatch: pytest.MonkeyPatch, isolated_env: dict[str, str]
) -> None:
    monkeypatch.delenv("PUBLIC_URL")
    monkeypatch.delenv("AMOCRM_REDIRECT_URI")
    monkeypatch.delenv("SANDBOX_AMOCRM_DISABLE_HOOK_URL")
    monkeypatch.setenv("ADMIN_TOKEN", "s3cr3t-admin-value")
    reset_caches()
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-admin-value" not in result.output
    assert isolated_env["ENCRYPTION_KEY"] not in result.output
    report = json.loads(result.output)
    assert report["warnings"] == []
    entries = report["settings"]
    assert entries["ADMIN_TOKEN"] == {"value": "(set, 18 characters)", "source": "environment"}
    port = isolated_env["GATEWAY_PORT"]
    assert entries["PUBLIC_URL"] == {"value": f"http://localhost:{port}", "source": "derived"}
    assert entries["AMOCRM_REDIRECT_URI"]["source"] == "derived"
    assert entries["LOG_LEVEL"]["source"] == "environment"
    assert entries["JOB_TTR_SECONDS"]["source"] == "default"


def test_config_exits_1_with_a_warning_when_urls_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_URL", "http://127.0.0.1:1")
    reset_caches()
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 1
    assert "warning: PUBLIC_URL http://127.0.0.1:1" in result.output
    assert "amosync effective settings" in result.output
