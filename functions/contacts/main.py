"""functions/contacts: GET /contacts (a page of an account's amoCRM contacts) and GET /contact."""

from typing import Any
from urllib.parse import urlencode

import flask
import functions_framework

from shared import errors
from shared.access import authorize_account, int_param
from shared.amocrm.client import MAX_PAGE
from shared.contacts import valid_email
from shared.db import get_database
from shared.http import endpoint, query_param, require_method
from shared.lookup import contact_view, contacts_page
from shared.tokens import amocrm_client_for
from shared.unisender_link import get_unisender_link, unisender_client_for
from shared.widget_auth import preflight, with_cors


@functions_framework.http
@endpoint("contacts")
def contacts(request: flask.Request) -> Any:
    # The amoCRM widget calls these from the account's origin: answer its CORS preflight.
    if request.method == "OPTIONS":
        return preflight(request)
    return with_cors(request, lambda: route(request))


def route(request: flask.Request) -> Any:
    require_method(request, "GET")
    path = request.path.rstrip("/")
    if path == "/contacts":
        return list_contacts(request)
    if path == "/contact":
        return show_contact(request)
    raise errors.NotFound("no such route")


def list_contacts(request: flask.Request) -> Any:
    db = get_database()
    caller = authorize_account(request, db)
    limit = int_param(request, "limit", default=MAX_PAGE, low=1, high=MAX_PAGE)
    page = int_param(request, "cursor", default=1, low=1, high=1_000_000)
    assert limit is not None and page is not None
    body = contacts_page(
        db, amocrm_client_for(caller.account, db=db), caller.account, page=page, limit=limit
    )
    if body["next_cursor"] is not None:
        args = request.args.to_dict()
        args.update(limit=str(limit), cursor=str(body["next_cursor"]))
        body["next"] = f"/contacts?{urlencode(args)}"
    else:
        body["next"] = None
    return body


def show_contact(request: flask.Request) -> Any:
    db = get_database()
    raw = query_param(request, "email", max_length=254)
    email = valid_email(raw)
    if email is None:
        raise errors.BadRequest("'email' is not an email address", code="invalid_parameter")
    caller = authorize_account(request, db)
    link = get_unisender_link(db, caller.account.id)
    if link is None:
        raise errors.Conflict(
            "this account has no Unisender key connected", code="unisender_not_connected"
        )
    with unisender_client_for(link) as uni:
        view = contact_view(db, uni, caller.account, email=email, list_id=link.list_id)
    if view is None:
        raise errors.NotFound("neither Unisender nor amosync knows this address")
    return view
