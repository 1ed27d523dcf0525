"""Who may call a route: the `Auth` a route declares, checked before its handler runs.

- `PUBLIC`: anyone (the OAuth start and redirect, whose own `state` check is the handler's);
  an admin bearer, if sent, is recognised (`/auth?rebind=1` needs it).
- `AMOCRM_SIGNED`: amoCRM's disable hook, HMAC-signed with the client secret.
- `WEBHOOK_SECRET`: the per-account secret in the path (`{account_id}` / `{secret}`).
- `WIDGET`: amoCRM's one-time `X-Auth-Token` JWT; the caller is that token's account.
- `ADMIN`: `Authorization: Bearer <ADMIN_TOKEN>`.
- `ADMIN_OR_WIDGET`: the admin bearer (any account) or the widget JWT (its own account only).
- `ADMIN_PAGE`: the admin bearer, or HTTP Basic with ADMIN_TOKEN as the password (a browser).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import flask

from shared import errors, oauth_flow
from shared.accounts import AccountRow, find_account
from shared.db import Database, get_database
from shared.settings import get_settings
from shared.web.admin_guard import client_ip, record_failure, refuse_if_locked
from shared.web.request import int_param, query_param
from shared.web.widget_token import HEADER as WIDGET_HEADER
from shared.web.widget_token import WidgetClaims, authenticate_widget
from shared.webhook_intake import check_webhook_secret


class Auth(enum.Enum):
    PUBLIC = "public"
    AMOCRM_SIGNED = "amocrm_signed"
    WEBHOOK_SECRET = "webhook_secret"  # noqa: S105 -- a route kind, not a password
    WIDGET = "widget"
    ADMIN = "admin"
    ADMIN_OR_WIDGET = "admin_or_widget"
    ADMIN_PAGE = "admin_page"


CallerKind = Literal["anonymous", "admin", "widget", "amocrm", "webhook"]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the kind, and the account it acts for when that is known."""

    kind: CallerKind
    account: AccountRow | None = None
    account_id: int | None = None
    claims: WidgetClaims | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


class CredentialsRequired(errors.Unauthorized):
    """401 that asks a browser for Basic credentials (the status page only)."""

    headers = {"WWW-Authenticate": 'Basic realm="amosync status", charset="UTF-8"'}


def bearer_token(request: flask.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _is_admin_token(given: str) -> bool:
    expected = get_settings().admin_token.get_secret_value()
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def is_admin(request: flask.Request) -> bool:
    """True when the request carries the ADMIN_TOKEN bearer (compared in constant time)."""
    given = bearer_token(request)
    return given is not None and _is_admin_token(given)


def is_admin_basic(request: flask.Request) -> bool:
    """True for HTTP Basic credentials whose password is the ADMIN_TOKEN (any user name).

    Only for the read-only status page, which a browser opens: browsers send Basic credentials
    by themselves, so state-changing routes never accept them (that would invite CSRF).
    """
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, sep, password = decoded.partition(":")
    return bool(sep) and _is_admin_token(password)


def authenticate(auth: Auth, request: flask.Request, params: Mapping[str, str]) -> Caller:
    """The caller of a route declared with `auth`; raises the 401/404/429 to answer otherwise."""
    if auth is Auth.AMOCRM_SIGNED:
        account_id = oauth_flow.verify_disable_hook(get_settings(), request.args)
        return Caller("amocrm", account_id=account_id)
    if auth is Auth.WEBHOOK_SECRET:
        account_id = int(params["account_id"])
        # Unknown account and wrong secret look the same from outside: nothing to enumerate.
        if not check_webhook_secret(get_database(), account_id, params["secret"]):
            raise errors.NotFound("no such webhook", code="webhook_not_found")
        return Caller("webhook", account_id=account_id)
    if auth is Auth.WIDGET:
        return _widget(request, get_database())
    if _admin_credentials(request, basic=auth is Auth.ADMIN_PAGE):
        return Caller("admin")
    if auth is Auth.PUBLIC:
        return Caller("anonymous")
    if auth is Auth.ADMIN_PAGE:
        raise CredentialsRequired("admin credentials required", code="unauthorized")
    if auth is Auth.ADMIN_OR_WIDGET and request.headers.get(WIDGET_HEADER):
        return _widget(request, get_database())
    raise errors.Unauthorized(
        "credentials required: Authorization: Bearer <ADMIN_TOKEN>"
        + (" or the widget's X-Auth-Token" if auth is Auth.ADMIN_OR_WIDGET else "")
    )


def _admin_credentials(request: flask.Request, *, basic: bool) -> bool:
    """Whether the request carries the admin's credentials; wrong ones count against its IP."""
    if not request.headers.get("Authorization", "").strip():
        return False
    db, ip = get_database(), client_ip(request)
    refuse_if_locked(db, ip)
    if is_admin(request):
        return True
    if is_admin_basic(request):
        # The right password: a browser resends the status page's Basic credentials to other
        # routes by itself. Only the page takes them, but they are no guess.
        return basic
    record_failure(db, ip)
    return False


def _widget(request: flask.Request, db: Database) -> Caller:
    claims, account = authenticate_widget(request, db)
    return Caller("widget", account=account, account_id=account.id, claims=claims)


def account_for(request: flask.Request, caller: Caller, db: Database) -> AccountRow:
    """The account named by `name` or `account_id`, if the caller may act on it.

    The admin may name any account. A widget acts on its own account only: naming another one
    is 403, whether or not that account exists.
    """
    name = query_param(request, "name", required=False)
    account_id = int_param(request, "account_id", default=None, low=1, high=2**63 - 1)
    if name is not None and account_id is not None:
        raise errors.BadRequest("give either 'name' or 'account_id', not both", code="bad_request")
    if caller.kind == "widget" and caller.account is not None:
        account = caller.account
        if (name is not None and name != account.name) or (
            account_id is not None and account_id != account.id
        ):
            raise errors.Forbidden(
                "this widget token belongs to another account", code="foreign_account"
            )
        return account
    if not caller.is_admin:
        raise errors.Unauthorized("admin credentials required")
    if name is None and account_id is None:
        raise errors.BadRequest(
            "query parameter 'name' (or 'account_id') is required", code="missing_parameter"
        )
    return find_account(db, name=name, account_id=account_id)
