"""What every HTTP function shares: request ids, health checks, auth and the one error mapping."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from shared import errors, failures
from shared.db import get_database
from shared.jobqueue import get_queue
from shared.logs import configure_logging, new_request_id, request_id_var
from shared.settings import get_settings

log = logging.getLogger("amosync.http")

Handler = Callable[[flask.Request], Any]

_configured: set[str] = set()

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


def json_error(status: int, code: str, message: str) -> flask.Response:
    response = flask.jsonify(error_body(code, message))
    response.status_code = status
    return response


def _werkzeug_error(exc: HTTPException) -> flask.Response:
    status = exc.code or 500
    message = "no such route" if status == 404 else (exc.name or "request refused").lower()
    return json_error(status, _HTTP_CODES.get(status, "http_error"), message)


def install_json_http_errors() -> None:
    """Give the errors Flask raises before our handler runs the JSON shape too.

    functions-framework routes `/<path:path>`, which never matches a path holding a newline
    (`/webhook/1/%0A`): Flask then answers its own HTML 404 without calling the function.
    FF executes main.py inside its app's context, so the decorator below can reach the app.
    """
    if not flask.has_app_context():
        return
    app = flask.current_app
    if not app.config.get("AMOSYNC_JSON_ERRORS"):
        app.register_error_handler(HTTPException, _werkzeug_error)
        app.config["AMOSYNC_JSON_ERRORS"] = True


def endpoint(function_name: str) -> Callable[[Handler], Callable[[flask.Request], flask.Response]]:
    """Wrap a functions-framework target: request id, health check, JSON errors, access log."""

    def decorate(handler: Handler) -> Callable[[flask.Request], flask.Response]:
        install_json_http_errors()

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
            if log.isEnabledFor(logging.DEBUG):  # the access line is off in production
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
