"""Reading a request: query parameters, JSON bodies within limits, and the request id."""

from __future__ import annotations

import json
import re
from typing import Any

import flask

from shared import errors
from shared.logs import new_request_id

# Ids we echo (X-Request-Id) and log: a caller's own id is kept only when it is this short and
# plain; anything else (too long for nginx's response header buffer, odd characters) is replaced.
MAX_REQUEST_ID_LENGTH = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")

# JSON bodies: nothing we accept nests deeper than a few levels; Python's json recurses per level
# and a deep enough document raised RecursionError (a 500) before this check existed.
MAX_JSON_DEPTH = 20


def query_param(
    request: flask.Request, name: str, *, required: bool = True, max_length: int = 190
) -> str | None:
    """A trimmed query parameter; 400 when required and missing, or longer than `max_length`."""
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


def int_param(
    request: flask.Request, name: str, *, default: int | None, low: int, high: int
) -> int | None:
    """An integer query parameter within [low, high]; 400 when it is not one."""
    raw = query_param(request, name, required=False, max_length=20)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f"'{name}' must be an integer", code="invalid_parameter") from None
    if not low <= value <= high:
        raise errors.BadRequest(
            f"'{name}' must be between {low} and {high}", code="invalid_parameter"
        )
    return value


def request_id_of(request: flask.Request) -> str:
    """The caller's X-Request-Id when it is plain and at most 128 characters, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else new_request_id()


def json_depth(text: str) -> int:
    """How deeply `text`'s arrays and objects nest, counted without parsing (strings skipped).

    One linear pass: a regex for strings backtracks quadratically on unterminated ones.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def json_object(request: flask.Request, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The request's JSON body as an object; 400 saying why when it is not one.

    Its size is bounded by the route's `max_body` (413 beyond it), its nesting by `max_depth`.
    """
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.BadRequest("the JSON body is not UTF-8", code="invalid_json") from None
    if json_depth(text) > max_depth:
        raise errors.BadRequest(
            f"the JSON body nests deeper than {max_depth} levels", code="json_too_deep"
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise errors.BadRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise errors.BadRequest("the JSON body must be an object", code="invalid_json")
    return data
