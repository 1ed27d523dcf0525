"""functions/auth: amoCRM OAuth install (`/auth`) and the disable hook (`/auth/disable`)."""

import contextlib

import flask
import functions_framework
from werkzeug.wrappers import Response

from shared import oauth_flow
from shared.db import get_database
from shared.errors import AppError, BadRequest
from shared.settings import get_settings
from shared.web.auth import Auth
from shared.web.pages import OAUTH_PAGE_HEADERS, html_page
from shared.web.request import query_param
from shared.web.routes import Call, Route, RouteTable


def disable(call: Call) -> Response:
    assert call.caller.account_id is not None  # set by Auth.AMOCRM_SIGNED
    known = oauth_flow.disable_account(get_database(), call.caller.account_id)
    return flask.jsonify(
        {"status": "disabled", "account_id": call.caller.account_id, "known": known}
    )


def oauth(call: Call) -> Response:
    try:
        return _oauth(call)
    except AppError as exc:
        # A person in a browser gets a page; scripts (and amoCRM) get the JSON error.
        accepts = call.request.accept_mimetypes.best_match(["application/json", "text/html"])
        if accepts != "text/html":
            raise
        return _page("Authorization failed", exc.message, exc.status, ok=False)


ROUTES = RouteTable(
    "auth",
    [
        Route("/auth", oauth, auth=Auth.PUBLIC),  # the OAuth flow checks its own `state`
        Route("/auth/disable", disable, auth=Auth.AMOCRM_SIGNED),
    ],
)


@functions_framework.http
def auth(request: flask.Request) -> flask.Response:
    return ROUTES.dispatch(request)


def _oauth(call: Call) -> Response:
    request = call.request
    args = request.args
    settings = get_settings()
    if args.get("error"):
        if args.get("state"):
            # Spend it: a denied request must not be replayable.
            with contextlib.suppress(BadRequest):
                oauth_flow.consume_state(get_database(), args["state"])
        if args["error"] == "access_denied":
            message = "Access was not granted in amoCRM, so nothing was installed."
            return _page("Authorization declined", message, 403, ok=False)
        raise BadRequest("amoCRM reported an authorization error", code="oauth_error")
    if args.get("code"):
        result = oauth_flow.complete_authorization(
            get_database(),
            settings,
            code=query_param(request, "code", max_length=4096) or "",
            referer=query_param(request, "referer", max_length=255) or "",
            state=query_param(request, "state", required=False, max_length=128),
            from_widget="from_widget" in args,
            client_id=query_param(request, "client_id", required=False),
        )
        if "from_widget" in args:
            return flask.jsonify({"status": "ok", "account_id": result.account.id})
        return _page("Account authorized", oauth_flow.success_message(result), 200, ok=True)
    name = query_param(request, "name", max_length=100) or ""
    url = oauth_flow.start_authorization(
        get_database(),
        settings,
        name=name,
        rebind=oauth_flow.is_true(args.get("rebind")),
        is_admin=call.caller.is_admin,
    )
    response = flask.redirect(url, code=302)
    response.headers.update(OAUTH_PAGE_HEADERS)
    return response


def _page(title: str, message: str, status: int, *, ok: bool) -> flask.Response:
    return html_page(oauth_flow.render_page(title, message, ok=ok), status, OAUTH_PAGE_HEADERS)
