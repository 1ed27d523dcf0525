"""functions/sync: /sync (start a full sync), /sync/status (its progress), /status (HTML page)."""

from typing import Any

import flask
import functions_framework

from shared import errors
from shared.db import get_database
from shared.status import collect_status, render_status_page
from shared.sync_runs import get_sync_run, latest_sync_run, request_sync, run_as_dict
from shared.web.auth import Auth, account_for
from shared.web.pages import STATUS_PAGE_HEADERS, html_page
from shared.web.request import int_param
from shared.web.routes import Call, Route, RouteTable


def start_sync(call: Call) -> Any:
    db = get_database()
    account = account_for(call.request, call.caller, db)
    started = request_sync(db, account.id, kind="full", requested_by=call.caller.kind)
    body = {"run_id": started.run_id, "status": started.status, "created": started.created}
    return body, 202 if started.created else 200


def sync_status(call: Call) -> Any:
    db = get_database()
    run_id = int_param(call.request, "run_id", default=None, low=1, high=2**63 - 1)
    if run_id is not None and call.caller.is_admin:
        run = get_sync_run(db, run_id)
    else:
        # A widget reads its own account's runs only (another account's run is "not found").
        account = account_for(call.request, call.caller, db)
        run = get_sync_run(db, run_id) if run_id else latest_sync_run(db, account.id)
        if run is not None and int(run["account_id"]) != account.id:
            run = None
    if run is None:
        raise errors.NotFound("no such sync run")
    return run_as_dict(run)


def status_page(call: Call) -> flask.Response:
    return html_page(render_status_page(collect_status(get_database())), 200, STATUS_PAGE_HEADERS)


ROUTES = RouteTable(
    "sync",
    [
        # The amoCRM widget may call these from the account's origin (CORS, X-Auth-Token).
        Route("/sync", start_sync, methods=("GET", "POST"), auth=Auth.ADMIN_OR_WIDGET, cors=True),
        Route("/sync/status", sync_status, auth=Auth.ADMIN_OR_WIDGET, cors=True),
        Route("/status", status_page, auth=Auth.ADMIN_PAGE),
    ],
)


@functions_framework.http
def sync(request: flask.Request) -> flask.Response:
    return ROUTES.dispatch(request)
