"""Settings, logging and error mapping: pure logic."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import ValidationError

from shared import errors
from shared.logs import JsonFormatter, redact, request_id_var
from shared.settings import Settings
from shared.web.error_mapping import map_exception

pytestmark = pytest.mark.unit


def test_placeholder_secrets_are_refused_outside_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MODE", "false")
    monkeypatch.setenv("ADMIN_TOKEN", "change-me-admin-token")
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        Settings()


def test_placeholders_are_tolerated_in_sandbox_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_MODE", "true")
    monkeypatch.setenv("ADMIN_TOKEN", "change-me-admin-token")
    assert Settings().admin_token.get_secret_value() == "change-me-admin-token"


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMOCRM_CLIENT_SECRET", "very-secret-value-123")
    assert "very-secret-value-123" not in repr(Settings())


def test_allowed_domains_and_public_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMOCRM_ALLOWED_DOMAINS", " amocrm.ru, Kommo.com ,")
    monkeypatch.setenv("PUBLIC_URL", "https://sync.example.com/base/")
    settings = Settings()
    assert settings.allowed_domains == ("amocrm.ru", "kommo.com")
    assert settings.public_origin == "https://sync.example.com"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("POST api_key=abcdef123&format=json", "abcdef123"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("/webhook/123/s3cr3tValue", "s3cr3tValue"),
        ('{"refresh_token": "def502abc"}', "def502abc"),
    ],
)
def test_redact_masks_secret_shapes(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_json_log_line_carries_request_id_and_extra() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("amosync.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = request_id_var.set("req-1")
    try:
        logger.info("hello %s", "world", extra={"account_id": 5})
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["msg"] == "hello world"
    assert line["request_id"] == "req-1"
    assert line["account_id"] == 5
    assert line["service"] == "test"


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.BadRequest("x"), 400, "bad_request"),
        (errors.Unauthorized("x"), 401, "unauthorized"),
        (errors.NotFound("x", code="unknown_account"), 404, "unknown_account"),
        (RuntimeError("boom"), 500, "internal_error"),
    ],
)
def test_one_mapping_from_exceptions_to_http(exc: Exception, status: int, code: str) -> None:
    assert map_exception(exc)[:2] == (status, code)


def test_infrastructure_failures_map_to_503() -> None:
    from shared.db import DatabaseUnavailable
    from shared.jobqueue import QueueUnavailable

    assert map_exception(DatabaseUnavailable("x"))[0] == 503
    assert map_exception(QueueUnavailable("x"))[0] == 503
