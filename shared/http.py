"""The one exception → HTTP mapping (status, error code, message) and the JSON error shape.

The web layer that serves requests with it is `shared/web/`.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException

from shared import errors
from shared.amocrm import errors as amo_errors
from shared.crypto import DecryptionFailed
from shared.db import DatabaseUnavailable
from shared.jobqueue import QueueUnavailable
from shared.unisender import errors as uni_errors

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
    if isinstance(exc, DecryptionFailed):
        # Our misconfiguration, not the caller's: ENCRYPTION_KEY lost the key that wrote the data.
        return (
            500,
            "encryption_key_mismatch",
            "stored secret cannot be decrypted; check ENCRYPTION_KEY",
        )
    if isinstance(exc, DatabaseUnavailable):
        return 503, "database_unavailable", "the database is unavailable; retry later"
    if isinstance(exc, QueueUnavailable):
        return 503, "queue_unavailable", "the queue is unavailable; retry later"
    if isinstance(exc, amo_errors.AccountBlocked):
        return 502, "amocrm_account_blocked", "amoCRM blocked this account for the integration"
    if isinstance(exc, amo_errors.Unauthorized | amo_errors.OAuthRejected):
        return 502, "amocrm_unauthorized", "amoCRM refused the account's tokens; re-authorize it"
    if isinstance(exc, amo_errors.RateLimited | amo_errors.Transient):
        return 503, "amocrm_unavailable", "amoCRM is unavailable or rate limited; retry later"
    if isinstance(exc, amo_errors.AmoCrmError):
        return 502, "amocrm_error", f"amoCRM refused the request (HTTP {exc.status})"
    if isinstance(exc, uni_errors.InvalidApiKey):
        return 400, "unisender_invalid_api_key", "Unisender rejected the API key"
    if isinstance(exc, uni_errors.AccessDenied):
        return 400, "unisender_access_denied", "Unisender denied access for this API key"
    if isinstance(exc, uni_errors.Transient):
        return 503, "unisender_unavailable", "Unisender is unavailable; retry later"
    if isinstance(exc, uni_errors.UnisenderError):
        return 502, "unisender_error", "Unisender refused the request"
    return 500, "internal_error", "internal error"
