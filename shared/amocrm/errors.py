"""amoCRM error tree and the one place that maps HTTP responses onto it."""

from __future__ import annotations

from typing import Any

import requests

from shared.failures import Failure, HttpAnswer, Scope

_UNAVAILABLE = HttpAnswer(
    503, "amocrm_unavailable", "amoCRM is unavailable or rate limited; retry later"
)


class AmoCrmError(Failure):
    """Any failure talking to amoCRM; the class attributes say what it means (shared.failures)."""

    summary = "amoCRM refused"
    http = HttpAnswer(502, "amocrm_error", "amoCRM refused the request")

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after  # seconds amoCRM asked us to wait, when it said

    def http_answer(self) -> HttpAnswer:
        if type(self).http is not AmoCrmError.http:
            return self.http
        return self.http._replace(message=f"{self.http.message} (HTTP {self.status})")


class Unauthorized(AmoCrmError):
    """401 that survived one refresh: the account must be re-authorized."""

    scope = Scope.ACCOUNT
    stops_account = "reauth_required"
    summary = "amoCRM refused the account's tokens (401): re-authorize, then replay"
    http = HttpAnswer(
        502, "amocrm_unauthorized", "amoCRM refused the account's tokens; re-authorize it"
    )


class RateLimited(AmoCrmError):
    """429 that we did not wait out in-process; reschedule after `retry_after` seconds.

    amoCRM's warning before a 403 ban of the IP (reference §5): it concerns every account behind
    our egress, and the work waits instead of spending its retry budget.
    """

    retriable = True
    scope = Scope.EGRESS
    # The client always sets retry_after (amoCRM's, or AMOCRM_RATE_LIMIT_PAUSE_SECONDS).
    default_retry_after = 30.0
    summary = "amoCRM rate limit"
    http = _UNAVAILABLE


class Blocked(AmoCrmError):
    """403: amoCRM blocks our egress IP or the account (its docs disagree which; reference §5).

    Never an account status: shared/blocks.py holds every request through the IP (or, once a
    probe shows others get through, through the account), probes on a growing interval and
    resumes by itself. The work waits in the queue for `retry_after` (the next probe).
    """

    retriable = True
    scope = Scope.EGRESS
    default_retry_after = 60.0
    summary = "amoCRM blocked our requests (403); waiting for a probe to get through"
    http = HttpAnswer(
        503,
        "amocrm_blocked",
        "amoCRM is refusing our requests (403); they resume by themselves once it lifts the block",
    )


class PaymentRequired(AmoCrmError):
    """402: the amoCRM account is not paid; paying restores access, so reconciles only pause."""

    scope = Scope.ACCOUNT
    pauses_reconciles = True
    summary = "amoCRM account unpaid (402): replay once it is paid"


class NotFound(AmoCrmError):
    """404."""


class BadRequest(AmoCrmError):
    """400/422 or another 4xx we sent wrongly: a bug or bad data, never retried."""


class Transient(AmoCrmError):
    """5xx, timeout or connection failure: worth retrying later."""

    retriable = True
    scope = Scope.ACCOUNT
    summary = "amoCRM unavailable"
    http = _UNAVAILABLE


class OAuthRejected(AmoCrmError):
    """4xx from the token endpoint: terminal, the account needs re-authorization."""

    scope = Scope.ACCOUNT
    stops_account = "reauth_required"
    summary = "token refresh rejected: re-authorize, then replay"
    http = Unauthorized.http

    def __init__(self, message: str, *, hint: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.hint = hint

    def detail(self) -> str:
        return self.hint or str(self)


class OAuthTransient(Transient):
    """5xx, 408, 429 or a network failure at the token endpoint: the same grant may be retried.

    `retry_after` (seconds) is set when amoCRM said how long to wait.
    """


def _json_body(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _detail(body: Any, resp: requests.Response) -> str:
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("title", "detail", "hint") if body.get(k)]
        if parts:
            return ": ".join(parts)
    return resp.reason or f"HTTP {resp.status_code}"


def parse_retry_after(resp: requests.Response, body: Any = None) -> float | None:
    """Seconds to wait from the problem+json `retry_after` or a `Retry-After` header."""
    candidates: list[Any] = []
    if isinstance(body, dict):
        candidates.append(body.get("retry_after"))
    candidates.append(resp.headers.get("Retry-After"))
    for value in candidates:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None


def raise_for_response(resp: requests.Response) -> None:
    """Raise the `AmoCrmError` subclass for a non-2xx API response; return on 2xx."""
    status = resp.status_code
    if status < 400:
        return
    body = _json_body(resp)
    kw: dict[str, Any] = {
        "status": status,
        "request_id": resp.headers.get("X-Request-Id"),
        "body": body,
    }
    message = (
        f"amoCRM {resp.request.method if resp.request else ''} -> {status}: {_detail(body, resp)}"
    )
    if status == 401:
        raise Unauthorized(message, **kw)
    if status == 402:
        raise PaymentRequired(message, **kw)
    if status == 403:
        # The body may be an nginx HTML page rather than problem+json: the status decides.
        raise Blocked(message, **kw)
    if status == 404:
        raise NotFound(message, **kw)
    if status == 429:
        raise RateLimited(message, retry_after=parse_retry_after(resp, body), **kw)
    if status >= 500:
        raise Transient(message, **kw)
    raise BadRequest(message, **kw)


# The token endpoint's answers that say "not now" rather than "never": the grant is unspent.
# 403 is amoCRM's block of our IP (reference §5), not a verdict on this account's grant:
# marking the account reauth_required for it would strand it after the block is lifted.
_OAUTH_RETRYABLE = (403, 408, 429)


def raise_for_oauth_response(resp: requests.Response) -> None:
    """Token endpoint: 5xx, 403, 408, 429 transient; any other 4xx terminal (`OAuthRejected`)."""
    status = resp.status_code
    if status < 400:
        return
    body = _json_body(resp)
    hint = body.get("hint") if isinstance(body, dict) else None
    kw: dict[str, Any] = {
        "status": status,
        "request_id": resp.headers.get("X-Request-Id"),
        "body": body,
    }
    message = f"amoCRM token endpoint -> {status}: {_detail(body, resp)}"
    if status >= 500 or status in _OAUTH_RETRYABLE:
        # Reference §1.5: only a refused grant is terminal. A rate limit or a timeout is not a
        # revoked grant; marking the account reauth_required for one would strand it for good.
        raise OAuthTransient(message, retry_after=parse_retry_after(resp, body), **kw)
    raise OAuthRejected(message, hint=str(hint) if hint is not None else None, **kw)
