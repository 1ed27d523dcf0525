"""What every HTTP function shares: request ids, health checks, auth and the one error mapping."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import flask

from shared import errors
from shared.amocrm import errors as amo_errors
from shared.db import DatabaseUnavailable, get_database
from shared.logging import configure_logging, new_request_id, request_id_var
from shared.queue import QueueUnavailable, get_queue
from shared.settings import get_settings
from shared.unisender import errors as uni_errors

log = logging.getLogger("amosync.http")

Handler = Callable[[flask.Request], Any]

_configured: set[str] = set()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def map_exception(exc: BaseException) -> tuple[int, str, str]:
    """The one place that turns an exception into (HTTP status, error code, message)."""
    if isinstance(exc, errors.AppError):
        return exc.status, exc.code, exc.message
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


def json_error(status: int, code: str, message: str) -> flask.Response:
    response = flask.jsonify(error_body(code, message))
    response.status_code = status
    return response


def endpoint(function_name: str) -> Callable[[Handler], Callable[[flask.Request], flask.Response]]:
    """Wrap a functions-framework target: request id, health check, JSON errors, access log."""

    def decorate(handler: Handler) -> Callable[[flask.Request], flask.Response]:
        @wraps(handler)
        def wrapper(request: flask.Request) -> flask.Response:
            if function_name not in _configured:
                configure_logging(function_name, get_settings().log_level)
                _configured.add(function_name)
            request_id = request.headers.get("X-Request-Id") or new_request_id()
            token = request_id_var.set(request_id[:64])
            started = time.perf_counter()
            try:
                if request.path.rstrip("/").endswith("/healthz"):
                    response = health(function_name, deep=request.args.get("deep") == "1")
                else:
                    response = flask.make_response(handler(request))
            except Exception as exc:
                status, code, message = map_exception(exc)
                if status >= 500 and status != 503:
                    log.exception("request failed", extra={"path": request.path})
                else:
                    log.warning(
                        "request refused",
                        extra={"status": status, "code": code, "path": request.path},
                    )
                response = json_error(status, code, message)
            finally:
                request_id_var.reset(token)
            response.headers["X-Request-Id"] = request_id
            log.debug(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response

        return wrapper

    return decorate


def health(function_name: str, *, deep: bool) -> flask.Response:
    """Liveness; with ?deep=1 also checks MySQL and beanstalkd (503 when one is down)."""
    body: dict[str, Any] = {"status": "ok", "function": function_name}
    if deep:
        checks: dict[str, str] = {}
        for name, probe in (("mysql", get_database().ping), ("beanstalk", get_queue().ping)):
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"down: {type(exc).__name__}"
        body["checks"] = checks
        if any(v != "ok" for v in checks.values()):
            body["status"] = "degraded"
            response = flask.jsonify(body)
            response.status_code = 503
            return response
    return flask.jsonify(body)


def require_method(request: flask.Request, *methods: str) -> None:
    if request.method not in methods:
        raise errors.MethodNotAllowed(f"use {' or '.join(methods)}")


def bearer_token(request: flask.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def is_admin(request: flask.Request) -> bool:
    """True when the request carries the ADMIN_TOKEN bearer (compared in constant time)."""
    expected = get_settings().admin_token.get_secret_value()
    given = bearer_token(request)
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def require_admin(request: flask.Request) -> None:
    if not is_admin(request):
        raise errors.Unauthorized(
            "admin credentials required (Authorization: Bearer <ADMIN_TOKEN>)"
        )


def query_param(
    request: flask.Request, name: str, *, required: bool = True, max_length: int = 190
) -> str | None:
    value = request.args.get(name)
    if value is None or value.strip() == "":
        if required:
            raise errors.BadRequest(
                f"query parameter '{name}' is required", code="missing_parameter"
            )
        return None
    value = value.strip()
    if len(value) > max_length:
        raise errors.BadRequest(f"query parameter '{name}' is too long", code="invalid_parameter")
    return value


def json_body(request: flask.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says why it is not one."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise errors.BadRequest("expected a JSON object body", code="invalid_json")
    return data
