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
    """A call limit (1,200 calls/min): reschedule the work, never sleep a worker through it."""

    # The block's duration is undocumented; the docs advise about a minute.
    default_retry_after = 60.0
    summary = "Unisender rate limit"


class KeyRateLimited(RateLimited):
    """`api_call_limit_exceeded_for_api_key`: this account's key spent its calls."""


class IpRateLimited(RateLimited):
    """`api_call_limit_exceeded_for_ip`: every key behind our egress IP must wait."""

    scope = Scope.EGRESS


_BY_CODE: dict[str, type[UnisenderError]] = {
    "invalid_api_key": InvalidApiKey,
    "access_denied": AccessDenied,
    "invalid_arg": InvalidArgument,
    "unknown_method": UnknownMethod,
    "not_enough_money": NotEnoughMoney,
    "retry_later": RetryLater,
    "api_call_limit_exceeded_for_api_key": KeyRateLimited,
    "api_call_limit_exceeded_for_ip": IpRateLimited,
}

# `unspecified` (or a code we do not know) carries its meaning only in the message. The client
# calls `/en/api`, so these are the English texts the docs give; an internal prefix
# ("XX123 [...]") may come first, hence search, not match. Anything else stays UnisenderError.
_BY_MESSAGE: tuple[tuple[re.Pattern[str], type[UnisenderError]], ...] = (
    # exclude/unsubscribe/getContact of an unknown address: there is no not-found code.
    (re.compile(r'\bContact (?:"[^"]*" )?not found', re.IGNORECASE), NotFound),
    # Our data or list setup is wrong for this call: retrying it unchanged cannot help.
    (re.compile(r"\bhas no confirmation letters\b", re.IGNORECASE), InvalidArgument),
    (
        re.compile(r"\balready exist but owned by different subscribers\b", re.IGNORECASE),
        InvalidArgument,
    ),
    # Documented as "GET and POST used simultaneously": a bug in how we call.
    (
        re.compile(r"\bCall to a member function getMessage\(\) on boolean", re.IGNORECASE),
        UnknownMethod,
    ),
)


def error_from_envelope(error: object, code: object, *, method: str = "") -> UnisenderError:
    """Build the exception for an `{"error": ..., "code": ...}` envelope: code first, then text."""
    # Messages arrive HTML-encoded (&quot;): decode once so they can be matched and logged.
    message = html.unescape(str(error or "")).strip() or "no error message"
    code_text = str(code or "unspecified")
    cls = _BY_CODE.get(code_text) or next(
        (known for pattern, known in _BY_MESSAGE if pattern.search(message)), UnisenderError
    )
    return cls(message, code=code_text, method=method)
