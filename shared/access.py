"""Who may read or sync an account: the operator (ADMIN_TOKEN) or that account's own widget."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Literal

import flask

from shared import errors
from shared.accounts import AccountRow, find_account
from shared.db import Database
from shared.http import is_admin, query_param
from shared.settings import get_settings
from shared.widget_auth import HEADER as WIDGET_HEADER
from shared.widget_auth import authenticate_widget


@dataclass(frozen=True)
class Caller:
    """An authenticated caller and the one account it acts on."""

    kind: Literal["admin", "widget"]
    account: AccountRow


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


def authorize_account(request: flask.Request, db: Database) -> Caller:
    """The account named by `name` or `account_id`, if the caller may act on it.

    The admin bearer may name any account. A widget token (X-Auth-Token) acts on its own account
    only: naming another one is 403, whether or not that account exists.
    """
    name = query_param(request, "name", required=False)
    account_id = int_param(request, "account_id", default=None, low=1, high=2**63 - 1)
    if name is not None and account_id is not None:
        raise errors.BadRequest("give either 'name' or 'account_id', not both", code="bad_request")
    if is_admin(request):
        if name is None and account_id is None:
            raise errors.BadRequest(
                "query parameter 'name' (or 'account_id') is required", code="missing_parameter"
            )
        return Caller("admin", find_account(db, name=name, account_id=account_id))
    if request.headers.get(WIDGET_HEADER):
        _, account = authenticate_widget(request, db)
        if (name is not None and name != account.name) or (
            account_id is not None and account_id != account.id
        ):
            raise errors.Forbidden(
                "this widget token belongs to another account", code="foreign_account"
            )
        return Caller("widget", account)
    raise errors.Unauthorized(
        "credentials required: Authorization: Bearer <ADMIN_TOKEN> or the widget's X-Auth-Token"
    )


def is_admin_basic(request: flask.Request) -> bool:
    """True for HTTP Basic credentials whose password is the ADMIN_TOKEN (any user name).

    Only for the read-only status page, which a browser opens: browsers send Basic credentials
    by themselves, so state-changing routes never accept them (that would invite CSRF).
    """
    expected = get_settings().admin_token.get_secret_value()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "basic" or not value.strip():
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, sep, password = decoded.partition(":")
    return bool(sep) and hmac.compare_digest(password.encode(), expected.encode())
