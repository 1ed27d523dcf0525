"""functions/contacts: GET /contacts (a page of an account's amoCRM contacts) and GET /contact."""

from typing import Any
from urllib.parse import urlencode

import flask
import functions_framework

from shared import errors
from shared.amocrm.client import MAX_PAGE
from shared.contacts import valid_email
from shared.db import get_database
from shared.lookup import contact_view, contacts_page
from shared.tokens import amocrm_client_for
from shared.unisender_link import get_unisender_link, unisender_client_for
from shared.web.auth import Auth, account_for
from shared.web.request import int_param, query_param
from shared.web.routes import Call, Route, RouteTable


def list_contacts(call: Call) -> Any:
    request, db = call.request, get_database()
    account = account_for(request, call.caller, db)
    limit = int_param(request, "limit", default=MAX_PAGE, low=1, high=MAX_PAGE)
    page = int_param(request, "cursor", default=1, low=1, high=1_000_000)
    assert limit is not None and page is not None
    body = contacts_page(db, amocrm_client_for(account, db=db), account, page=page, limit=limit)
    if body["next_cursor"] is not None:
        args = request.args.to_dict()
        args.update(limit=str(limit), cursor=str(body["next_cursor"]))
        body["next"] = f"/contacts?{urlencode(args)}"
    else:
        body["next"] = None
    return body


def show_contact(call: Call) -> Any:
    db = get_database()
    email = valid_email(query_param(call.request, "email", max_length=254))
    if email is None:
        raise errors.BadRequest("'email' is not an email address", code="invalid_parameter")
    account = account_for(call.request, call.caller, db)
    link = get_unisender_link(db, account.id)
    if link is None:
        raise errors.Conflict(
            "this account has no Unisender key connected", code="unisender_not_connected"
        )
    with unisender_client_for(link) as uni:
        view = contact_view(db, uni, account, email=email, list_id=link.list_id)
    if view is None:
        raise errors.NotFound("neither Unisender nor amosync knows this address")
    return view


# The amoCRM widget calls these from the account's origin: CORS, and its X-Auth-Token.
ROUTES = RouteTable(
    "contacts",
    [
        Route("/contacts", list_contacts, auth=Auth.ADMIN_OR_WIDGET, cors=True),
        Route("/contact", show_contact, auth=Auth.ADMIN_OR_WIDGET, cors=True),
    ],
)


@functions_framework.http
def contacts(request: flask.Request) -> flask.Response:
    return ROUTES.dispatch(request)
