"""functions/sync: /sync (start a full sync), /sync/status (its progress), /status (HTML page)."""

from typing import Any

import flask
import functions_framework

from shared import errors
from shared.access import authorize_account, int_param, is_admin_basic
from shared.db import get_database
from shared.http import endpoint, is_admin, require_method
from shared.status import collect_status, render_status_page
from shared.sync_runs import get_sync_run, latest_sync_run, request_sync, run_as_dict
from shared.widget_auth import preflight, with_cors


@functions_framework.http
@endpoint("sync")
def sync(request: flask.Request) -> Any:
    path = request.path.rstrip("/")
    if path in ("/sync", "/sync/status"):
        # The amoCRM widget may call these from the account's origin (CORS, X-Auth-Token).
        if request.method == "OPTIONS":
            return preflight(request)
        handler = start_sync if path == "/sync" else sync_status
        return with_cors(request, lambda: handler(request))
    if path == "/status":
        return status_page(request)
    raise errors.NotFound("no such route")


def start_sync(request: flask.Request) -> Any:
    require_method(request, "GET", "POST")
    db = get_database()
    caller = authorize_account(request, db)
    started = request_sync(db, caller.account.id, kind="full", requested_by=caller.kind)
    body = {"run_id": started.run_id, "status": started.status, "created": started.created}
    return body, 202 if started.created else 200


def sync_status(request: flask.Request) -> Any:
    require_method(request, "GET")
    db = get_database()
    run_id = int_param(request, "run_id", default=None, low=1, high=2**63 - 1)
    if run_id is not None and is_admin(request):
        run = get_sync_run(db, run_id)
    else:
        # A widget reads its own account's runs only (another account's run is "not found").
        caller = authorize_account(request, db)
        run = get_sync_run(db, run_id) if run_id else latest_sync_run(db, caller.account.id)
        if run is not None and int(run["account_id"]) != caller.account.id:
            run = None
    if run is None:
        raise errors.NotFound("no such sync run")
    return run_as_dict(run)


def status_page(request: flask.Request) -> Any:
    require_method(request, "GET")
    if not (is_admin(request) or is_admin_basic(request)):
        response = flask.make_response("admin credentials required", 401)
        response.headers["WWW-Authenticate"] = 'Basic realm="amosync status", charset="UTF-8"'
        response.headers["Content-Type"] = "text/plain; charset=utf-8"
        return response
    html = render_status_page(collect_status(get_database()))
    response = flask.make_response(html, 200)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
    )
    return response
