"""functions/auth: amoCRM OAuth install (`/auth`) and the disable hook (`/auth/disable`)."""

import contextlib

import flask
import functions_framework
from werkzeug.wrappers import Response

from shared import oauth_flow
from shared.db import get_database
from shared.errors import AppError, BadRequest, NotFound
from shared.http import endpoint, is_admin, query_param, require_method
from shared.settings import get_settings

# Pages that carry OAuth codes in their URL: no caching, no Referer leaking it onwards.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


@functions_framework.http
@endpoint("auth")
def auth(request: flask.Request) -> Response:
    require_method(request, "GET")
    path = request.path.rstrip("/")
    if path.endswith("/disable"):
        account_id = oauth_flow.verify_disable_hook(get_settings(), request.args)
        known = oauth_flow.disable_account(get_database(), account_id)
        return flask.jsonify({"status": "disabled", "account_id": account_id, "known": known})
    if path not in ("", "/auth"):
        raise NotFound("no such route")
    try:
        return _oauth(request)
    except AppError as exc:
        # A person in a browser gets a page; scripts (and amoCRM) get the JSON error.
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html":
            raise
        return _page("Authorization failed", exc.message, exc.status, ok=False)


def _oauth(request: flask.Request) -> Response:
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
        is_admin=is_admin(request),
    )
    response = flask.redirect(url, code=302)
    response.headers.update(PAGE_HEADERS)
    return response


def _page(title: str, message: str, status: int, *, ok: bool) -> flask.Response:
    response = flask.make_response(oauth_flow.render_page(title, message, ok=ok), status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers.update(PAGE_HEADERS)
    return response
