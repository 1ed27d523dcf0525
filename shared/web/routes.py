"""The route table: a function declares its routes; one dispatcher serves them all.

Each `functions/<name>/main.py` holds one `RouteTable`, e.g.

    ROUTES = RouteTable("sync", [
        Route("/sync", start_sync, methods=("GET", "POST"), auth=Auth.ADMIN_OR_WIDGET, cors=True),
        Route("/status", status_page, auth=Auth.ADMIN_PAGE),
    ])

and its functions-framework target is `return ROUTES.dispatch(request)`. For every request the
dispatcher sets the request id, answers `/<function>/healthz`, matches the path strictly,
checks the method, answers CORS preflights, authenticates the caller as the route declares,
runs the handler, and turns any exception into the one JSON error shape (`map_exception`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared import errors
from shared.db import get_database
from shared.jobqueue import get_queue
from shared.logs import configure_logging, request_id_var
from shared.settings import get_settings
from shared.web.auth import Auth, Caller, authenticate
from shared.web.cors import cors_headers, preflight
from shared.web.error_mapping import _HTTP_CODES, error_body, map_exception
from shared.web.request import request_id_of

log = logging.getLogger("amosync.http")

# Bodies a route accepts unless it says otherwise: widget forms and JSON are a few hundred bytes.
DEFAULT_MAX_BODY = 64 * 1024

# Path parameter kinds: `{account_id:id}` is ASCII digits only (no sign, no spaces), a BIGINT.
_PARAM_PATTERNS = {
    "id": r"[0-9]{1,19}",
    "secret": r"[A-Za-z0-9_-]{1,200}",
}
_PARAM = re.compile(r"\{(?P<name>[a-z_]+):(?P<kind>[a-z]+)\}")
MAX_ID = 2**63 - 1

_configured: set[str] = set()


@dataclass(frozen=True)
class Call:
    """What a handler receives: the request, the authenticated caller, the path parameters."""

    request: flask.Request
    caller: Caller
    params: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Route:
    """One route: a path pattern, its handler, the methods it takes, its auth and CORS."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    auth: Auth = Auth.PUBLIC
    # Answer the amoCRM widget's CORS preflight and put CORS headers on every answer.
    cors: bool = False
    # Larger bodies are refused with 413 before the handler (or auth) reads them.
    max_body: int = DEFAULT_MAX_BODY
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    id_params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(_compile(self.path)))
        ids = tuple(m["name"] for m in _PARAM.finditer(self.path) if m["kind"] == "id")
        object.__setattr__(self, "id_params", ids)

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` is this route's, else None (ids past BIGINT too)."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        params = found.groupdict()
        if any(int(params[name]) > MAX_ID for name in self.id_params):
            return None
        return params


def _compile(path: str) -> str:
    out, last = [], 0
    for m in _PARAM.finditer(path):
        out.append(re.escape(path[last : m.start()]))
        out.append(f"(?P<{m['name']}>{_PARAM_PATTERNS[m['kind']]})")
        last = m.end()
    out.append(re.escape(path[last:]))
    return "".join(out)


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> flask.Response:
    response = flask.jsonify(error_body(code, message))
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _werkzeug_error(exc: HTTPException) -> flask.Response:
    status = exc.code or 500
    message = "no such route" if status == 404 else (exc.name or "request refused").lower()
    return json_error(status, _HTTP_CODES.get(status, "http_error"), message)


def install_json_http_errors() -> None:
    """Give the errors Flask raises before our handler runs the JSON shape too.

    functions-framework routes `/<path:path>`, which never matches a path holding a newline
    (`/webhook/1/%0A`): Flask then answers its own HTML 404 without calling the function.
    FF executes main.py inside its app's context, so the table can reach the app.
    """
    if not flask.has_app_context():
        return
    app = flask.current_app
    if not app.config.get("AMOSYNC_JSON_ERRORS"):
        app.register_error_handler(HTTPException, _werkzeug_error)
        app.config["AMOSYNC_JSON_ERRORS"] = True


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


def _loggable_path(path: str) -> str:
    """The first path segment only: the rest may be a secret (`/webhook/<id>/<secret>`)."""
    first = path.strip("/").split("/", 1)
    return "/" + first[0] + ("/…" if len(first) > 1 else "")


class RouteTable:
    """The routes of one function, and the dispatcher that serves them."""

    def __init__(
        self,
        function_name: str,
        routes: Sequence[Route],
        *,
        not_found: tuple[str, str] = ("not_found", "no such route"),
    ) -> None:
        self.function_name = function_name
        self.routes = tuple(routes)
        self.not_found = not_found
        install_json_http_errors()

    def dispatch(self, request: flask.Request) -> flask.Response:
        if self.function_name not in _configured:
            configure_logging(self.function_name, get_settings().log_level)
            _configured.add(self.function_name)
        # Echoed in a response header and logged: bounded and plain, or replaced.
        request_id = request_id_of(request)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        route: Route | None = None
        try:
            response, route = self._answer(request)
        except Exception as exc:
            response = self._error(request, route, exc)
        finally:
            request_id_var.reset(token)
        response.headers["X-Request-Id"] = request_id
        if log.isEnabledFor(logging.DEBUG):  # the access line is off in production
            log.debug(
                "request",
                extra={
                    "method": request.method,
                    "path": route.path if route else _loggable_path(request.path),
                    "status": response.status_code,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response

    def _answer(self, request: flask.Request) -> tuple[flask.Response, Route | None]:
        path = request.path.rstrip("/") or "/"
        segments = path.strip("/").split("/")
        if len(segments) == 2 and segments[1] == "healthz":
            return health(self.function_name, deep=request.args.get("deep") == "1"), None
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            try:
                return self._serve(route, request, params), route
            except Exception as exc:
                return self._error(request, route, exc), route
        raise errors.NotFound(self.not_found[1], code=self.not_found[0])

    def _serve(
        self, route: Route, request: flask.Request, params: dict[str, str]
    ) -> flask.Response:
        if route.cors and request.method == "OPTIONS":
            return preflight(request)
        if request.method not in route.methods:
            raise errors.MethodNotAllowed(f"use {' or '.join(route.methods)}")
        if (request.content_length or 0) > route.max_body:
            raise RequestEntityTooLarge()
        # A body without Content-Length (chunked) is cut at the limit as it is read (413)...
        request.max_content_length = route.max_body
        try:
            caller = authenticate(route.auth, request, params)
            response = flask.make_response(route.handler(Call(request, caller, params)))
        finally:
            # ...but functions-framework drains the body after us: it must not raise there.
            request.max_content_length = None
        if route.cors:
            response.headers.update(cors_headers(request))
        return response

    def _error(self, request: flask.Request, route: Route | None, exc: Exception) -> flask.Response:
        status, code, message = map_exception(exc)
        path = route.path if route else _loggable_path(request.path)
        if status >= 500 and status != 503:
            log.exception("request failed", extra={"path": path})
        else:
            log.warning("request refused", extra={"status": status, "code": code, "path": path})
        headers = getattr(exc, "headers", None) if isinstance(exc, errors.AppError) else None
        response = json_error(status, code, message, headers)
        if route is not None and route.cors:
            response.headers.update(cors_headers(request))
        return response
