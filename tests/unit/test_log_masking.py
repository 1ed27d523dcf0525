"""Log masking hides secrets by key and by shape, and leaves error codes readable (issue 18 #5)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.logs import JsonFormatter, redact

pytestmark = pytest.mark.unit


def _log_line(message: str, **extra: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("amosync.test.masking")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning(message, extra=extra)
    finally:
        logger.removeHandler(handler)
    line: dict[str, object] = json.loads(stream.getvalue())
    return line


@pytest.mark.parametrize(
    "text",
    [
        '{"error": "Invalid API key", "code": "invalid_api_key"}',
        "{'code': 'api_call_limit_exceeded_for_ip'}",
        "unisender refused: code=retry_later",
        '"error_code": "unspecified"',
    ],
)
def test_error_codes_stay_readable(text: str) -> None:
    assert redact(text) == text


def test_an_extra_code_field_is_kept_and_secret_fields_are_masked() -> None:
    line = _log_line(
        "unisender error",
        code="invalid_api_key",
        error_code="access_denied",
        api_key="uni-key-0123456789",
        refresh_token="def50200aaaabbbbccccdddd",
        webhook_secret="s3cr3t-webhook-value",
    )
    assert line["code"] == "invalid_api_key"
    assert line["error_code"] == "access_denied"
    assert line["api_key"] == line["refresh_token"] == line["webhook_secret"] == "***"
    assert "uni-key-0123456789" not in json.dumps(line)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /auth?code=def50200abcdef0123456789abcdef&state=st4te-value", "def50200abcdef"),
        ("GET /auth?state=st4te-value-123&referer=x.amocrm.ru", "st4te-value-123"),
        ("exchanging def50200abcdef0123456789abcdef01 failed", "def50200abcdef0123456789"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJhY2NvdW50X2lkIjoxfQ.c2lnbmF0dXJl leaked", "c2lnbmF0dXJl"),
        ('{"authorization": "Bearer abc.def-ghi"}', "abc.def-ghi"),
        ("Authorization: Basic YWRtaW46c2VjcmV0LXBhc3N3b3Jk", "YWRtaW46c2VjcmV0LXBhc3N3b3Jk"),
        ('{"client_secret": "cl1ent-s3cret"}', "cl1ent-s3cret"),
        ("api_key=abcdef123&format=json", "abcdef123"),
        ("'password': 'hunter2hunter2'", "hunter2hunter2"),
        ("POST /webhook/%20123/websecret-value", "websecret-value"),
        ("POST /webhook/+123/websecret-value", "websecret-value"),
    ],
)
def test_secrets_are_masked_by_key_and_by_shape(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "***" in masked


def test_a_json_code_field_next_to_a_secret_keeps_the_code() -> None:
    text = '{"code": "invalid_arg", "api_key": "k3y-value-xyz"}'
    assert redact(text) == '{"code": "invalid_arg", "api_key": "***"}'
