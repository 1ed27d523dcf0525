"""Unisender error tree, mapped from the envelope's `code` in one place."""

from __future__ import annotations

import html
import re

from shared.failures import Failure, HttpAnswer, Scope


class UnisenderError(Failure):
    """Any failure talking to Unisender; the class attributes say what it means."""

    summary = "Unisender refused"
    http = HttpAnswer(502, "unisender_error", "Unisender refused the request")

    def __init__(self, message: str, *, code: str = "unspecified", method: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.method = method

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}[{self.code}] {self.message}"


class InvalidApiKey(UnisenderError):
    """The API key is wrong: alert the account owner, never retry."""

    scope = Scope.ACCOUNT
    summary = "Unisender rejected the account's API key: reconnect the widget, replay"
    http = HttpAnswer(400, "unisender_invalid_api_key", "Unisender rejected the API key")


class AccessDenied(UnisenderError):
    """API access is disabled for the account or the method is not permitted."""

    scope = Scope.ACCOUNT
    summary = InvalidApiKey.summary
    http = HttpAnswer(400, "unisender_access_denied", "Unisender denied access for this API key")


class InvalidArgument(UnisenderError):
    """A bad argument value (`invalid_arg`); retrying the same call cannot help."""


class UnknownMethod(UnisenderError):
    """The method name is wrong: a bug on our side."""


class NotEnoughMoney(UnisenderError):
    """The Unisender account balance is too low."""

    scope = Scope.ACCOUNT


class NotFound(UnisenderError):
    """`unspecified` with a 'not found' message, e.g. 'Contact "x" not found' from exclude."""


class Transient(UnisenderError):
    """HTTP non-2xx, timeouts, connection errors, non-JSON bodies: retry with backoff."""

    retriable = True
    scope = Scope.ACCOUNT
    summary = "Unisender unavailable"
    http = HttpAnswer(503, "unisender_unavailable", "Unisender is unavailable; retry later")


class RetryLater(Transient):
    """The `retry_later` code: Unisender asks for a retry."""


class RateLimited(Transient):
    """`api_call_limit_exceeded_for_api_key` / `_for_ip`: pause about a minute, then retry."""

    # The block's duration is undocumented; the docs advise about a minute.
    default_retry_after = 60.0
    summary = "Unisender rate limit"


_BY_CODE: dict[str, type[UnisenderError]] = {
    "invalid_api_key": InvalidApiKey,
    "access_denied": AccessDenied,
    "invalid_arg": InvalidArgument,
    "unknown_method": UnknownMethod,
    "not_enough_money": NotEnoughMoney,
    "retry_later": RetryLater,
    "api_call_limit_exceeded_for_api_key": RateLimited,
    "api_call_limit_exceeded_for_ip": RateLimited,
}

# The not-found text is documented only for exclude/unsubscribe; messages may carry an internal
# prefix ("XX123 [...]"), so match loosely.
_NOT_FOUND = re.compile(r"\bnot found\b", re.IGNORECASE)


def error_from_envelope(error: object, code: object, *, method: str = "") -> UnisenderError:
    """Build the exception for an `{"error": ..., "code": ...}` envelope."""
    # Messages arrive HTML-encoded (&quot;): decode once so they can be matched and logged.
    message = html.unescape(str(error or "")).strip() or "no error message"
    code_text = str(code or "unspecified")
    cls = _BY_CODE.get(code_text)
    if cls is None:
        cls = NotFound if _NOT_FOUND.search(message) else UnisenderError
    return cls(message, code=code_text, method=method)
