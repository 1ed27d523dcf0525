"""functions/widget: the amoCRM widget's backend (connect a Unisender key, status, disconnect).

Every call carries amoCRM's one-time X-Auth-Token JWT (sent by `self.$authorizedAjax`); CORS is
answered for amoCRM account origins only.
"""

from typing import Any

import flask
import functions_framework

from shared import errors, widget_connect
from shared.db import get_database
from shared.http import endpoint
from shared.widget_auth import authenticate_widget, preflight, with_cors


def _form(request: flask.Request) -> dict[str, Any]:
    # $authorizedAjax posts form fields like $.ajax; JSON is accepted too.
    data = request.get_json(silent=True) if request.is_json else None
    if isinstance(data, dict):
        return data
    return {key: request.form.get(key) for key in request.form}


def _route(request: flask.Request) -> Any:
    action = request.path.rstrip("/").removeprefix("/widget").strip("/") or "connect"
    allowed = {"connect": "POST", "status": "GET", "disconnect": "POST"}
    if action not in allowed:
        raise errors.NotFound("no such widget route")
    if request.method != allowed[action]:
        raise errors.MethodNotAllowed(f"use {allowed[action]}")
    db = get_database()
    _, account = authenticate_widget(request, db)
    if action == "status":
        return widget_connect.status(db, account)
    if action == "disconnect":
        return widget_connect.disconnect(db, account)
    body = _form(request)
    return widget_connect.connect(
        db, account, api_key=body.get("api_key"), email_types=body.get("email_types")
    )


@functions_framework.http
@endpoint("widget")
def widget(request: flask.Request) -> flask.Response:
    if request.method == "OPTIONS":
        return with_cors(request, lambda: preflight(request))
    return with_cors(request, lambda: _route(request))
