"""Reading a request: query parameters and the request id."""

from __future__ import annotations

import flask

from shared import errors


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
