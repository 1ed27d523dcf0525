"""The one exception → HTTP mapping (status, error code, message) and the JSON error shape.

The web layer that serves requests with it is `shared/web/`.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException

from shared import errors, failures

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def map_exception(exc: BaseException) -> tuple[int, str, str]:
    """The one place that turns an exception into (HTTP status, error code, message)."""
    if isinstance(exc, errors.AppError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, HTTPException) and exc.code is not None and exc.code < 500:
        # Flask/werkzeug refusing the request itself (a malformed body read by a handler).
        return exc.code, _HTTP_CODES.get(exc.code, "http_error"), (exc.name or "").lower()
    # Everything else means what shared.failures says it means (vendor errors, infrastructure).
    return failures.http_answer(exc)
