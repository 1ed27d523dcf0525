"""functions/widget: the amoCRM widget's backend (connect a Unisender key, status, disconnect).

Every call carries amoCRM's one-time X-Auth-Token JWT (sent by `self.$authorizedAjax`); CORS is
answered for amoCRM account origins only.
"""

from typing import Any

import flask
import functions_framework

from shared import widget_connect
from shared.db import get_database
from shared.web.auth import Auth
from shared.web.request import json_object
from shared.web.routes import Call, Route, RouteTable


def _form(request: flask.Request) -> dict[str, Any]:
    # $authorizedAjax posts form fields like $.ajax; JSON is accepted too (depth-limited).
    if request.is_json:
        return json_object(request)
    return {key: request.form.get(key) for key in request.form}


def connect(call: Call) -> Any:
    assert call.caller.account is not None  # Auth.WIDGET
    body = _form(call.request)
    return widget_connect.connect(
        get_database(),
        call.caller.account,
        api_key=body.get("api_key"),
        email_types=body.get("email_types"),
    )


def status(call: Call) -> Any:
    assert call.caller.account is not None
    return widget_connect.status(get_database(), call.caller.account)


def disconnect(call: Call) -> Any:
    assert call.caller.account is not None
    return widget_connect.disconnect(get_database(), call.caller.account)


ROUTES = RouteTable(
    "widget",
    [
        Route("/widget", connect, methods=("POST",), auth=Auth.WIDGET, cors=True),
        Route("/widget/status", status, auth=Auth.WIDGET, cors=True),
        Route("/widget/disconnect", disconnect, methods=("POST",), auth=Auth.WIDGET, cors=True),
    ],
    not_found=("not_found", "no such widget route"),
)


@functions_framework.http
def widget(request: flask.Request) -> flask.Response:
    return ROUTES.dispatch(request)
