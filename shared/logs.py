"""Structured JSON logs with the request id carried from the gateway through the queue."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

MASK = "***"

# Fields whose value is a secret whatever it looks like (`extra` keys and JSON/form keys in text).
# `code` is not among them: Unisender's and our own error codes travel as `code` and operators
# need to read them. The OAuth authorization code is masked by its shapes instead (below).
SECRET_KEYS = frozenset(
    {
        "api_key",
        "access_token",
        "refresh_token",
        "client_secret",
        "webhook_secret",
        "secret",
        "password",
        "admin_token",
        "encryption_key",
        "authorization",
        "x-auth-token",
        "signature",
    }
)
_KEY_ALTERNATION = "|".join(re.escape(k) for k in sorted(SECRET_KEYS, key=len, reverse=True))

# Belt and braces: even if a secret slips into a message, these shapes are masked. The header
# schemes go first, so `"authorization": "Bearer …"` loses the token, not just the word.
_SECRET_PATTERNS = [
    (re.compile(r"(?i)(Bearer\s+)[A-Za-z0-9._~+/=\-]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(Basic\s+)[A-Za-z0-9+/=]{8,}"), rf"\1{MASK}"),
    # key=value / "key": "value" / 'key': 'value' for every secret key.
    (
        re.compile(rf"(?i)(\b(?:{_KEY_ALTERNATION})[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)[^&\s\"',}}]+"),
        rf"\1{MASK}",
    ),
    # The secret segment of a webhook path, whatever the id segment holds (`%20123`, `+123`).
    (re.compile(r"(/webhook/[^/\s\"'?#]*/)[^/?#\s\"']+"), rf"\1{MASK}"),
    # OAuth parameters in a URL query: `?code=…&state=…` (a JSON "code" field is left alone).
    (re.compile(r"([?&](?:code|state)=)[^&\s\"'#]+"), rf"\1{MASK}"),
    # Shapes of amoCRM secrets wherever they appear: JWTs (access tokens, widget tokens) and
    # authorization / refresh codes (`def50200…`).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\bdef50200[0-9a-fA-F]{16,}"), MASK),
]


def redact(text: str) -> str:
    """`text` with every secret it carries replaced by `***`; error codes stay readable."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_field(key: str, value: Any) -> Any:
    """An `extra` field's value, masked when its key names a secret."""
    return MASK if key.lower() in SECRET_KEYS and value not in (None, "") else value


def new_request_id() -> str:
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and `extra` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = redact_field(key, value)
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(payload, default=str, ensure_ascii=False))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_amosync", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler._amosync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # urllib3 logs full URLs at DEBUG; keep it quiet whatever the root level.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
