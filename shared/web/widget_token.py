"""The amoCRM widget's one-time `X-Auth-Token` JWT.

Verified like amoCRM's `parseDisposableToken` (reference §6.2), and stricter: HS256 with the
integration's client secret; `aud` one string, the scheme + host of our Redirect URI; `nbf`/`exp`
with a small leeway; `client_uuid` = our client id; `account_id` (and `user_id`) JSON integers,
never "123", 123.5 or true; `iss` = https://<the stored host of that account>, and `subdomain`
(when sent) its first label. Then `jti` is spent once (amoCRM itself does not prevent reuse
inside the token's ~30 min).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import flask
import jwt
import pymysql

from shared import errors
from shared.accounts import AccountRow, get_account
from shared.db import Database
from shared.settings import Settings, get_settings

HEADER = "X-Auth-Token"
LEEWAY_SECONDS = 30
# amoCRM issues 30-minute tokens; anything claiming to live much longer was not made by it.
MAX_LIFETIME_SECONDS = 2 * 3600


@dataclass(frozen=True)
class WidgetClaims:
    """What a verified widget token says."""

    account_id: int
    user_id: int | None
    subdomain: str | None
    jti: str
    expires_at: datetime
    # The host `iss` names (e.g. acme.amocrm.ru): it must be the account's stored host.
    issuer_host: str = ""
    is_admin: bool | None = None


MAX_ID = 2**63 - 1


def expected_audience(settings: Settings) -> str:
    """The `aud` amoCRM signs: scheme + host of AMOCRM_REDIRECT_URI, no port and no path.

    That is how the official library builds it (`parseDisposableToken`: scheme '://' host of the
    redirect URI; reference §6.2). Whether amoCRM would add a non-default port is unverified: we
    accept exactly what the official verifier accepts.
    """
    parts = urlsplit(settings.amocrm_redirect_uri)
    if not parts.scheme or not parts.hostname:
        return ""
    return f"{parts.scheme}://{parts.hostname}"


def _refuse(message: str) -> errors.Unauthorized:
    return errors.Unauthorized(message, code="invalid_token")


def _is_id(value: object) -> bool:
    # A JSON integer only: bool is an int subclass in Python, "123" and 123.5 are not ids.
    return type(value) is int and 0 < value <= MAX_ID


def _issuer_host(issuer: object) -> str:
    """The host of an `iss` like https://acme.amocrm.ru; refused when it is anything else."""
    if not isinstance(issuer, str) or len(issuer) > 300:
        raise _refuse("widget token has a bad iss")
    parts = urlsplit(issuer)
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.port is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise _refuse("widget token has a bad iss")
    return parts.hostname


def verify_widget_token(
    token: str, *, settings: Settings | None = None, now: float | None = None
) -> WidgetClaims:
    """Check the token's signature and claims; raises errors.Unauthorized saying why not."""
    settings = settings or get_settings()
    secret = settings.amocrm_client_secret.get_secret_value()
    audience = expected_audience(settings)
    if not secret or not settings.amocrm_client_id or not audience:
        raise errors.ServiceUnavailable("the amoCRM integration is not configured")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            leeway=LEEWAY_SECONDS,
            options={
                "require": ["exp", "nbf", "jti", "iss", "aud", "account_id", "client_uuid"],
                # `aud` must be one string equal to ours, not a list that happens to hold it.
                "strict_aud": True,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise errors.Unauthorized("widget token expired", code="token_expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise _refuse("widget token not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise _refuse("widget token is for another site") from exc
    except jwt.InvalidTokenError as exc:
        # PyJWT's messages name the claim or check that failed, never a value of the token.
        raise _refuse(f"widget token rejected: {exc}") from exc
    if claims["client_uuid"] != settings.amocrm_client_id:
        raise _refuse("widget token is for another integration")
    current = now if now is not None else datetime.now(UTC).timestamp()
    if int(claims["exp"]) - current > MAX_LIFETIME_SECONDS:
        raise _refuse("widget token lives too long")
    if not _is_id(claims["account_id"]):
        raise _refuse("widget token's account_id is not a positive integer")
    user_id = claims.get("user_id")
    if user_id is not None and not _is_id(user_id):
        raise _refuse("widget token's user_id is not a positive integer")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti.strip() or len(jti) > 128:
        raise _refuse("widget token has a bad jti")
    issuer_host = _issuer_host(claims["iss"])
    subdomain = claims.get("subdomain")
    if subdomain is not None and (
        not isinstance(subdomain, str) or subdomain.lower() != issuer_host.split(".", 1)[0]
    ):
        raise _refuse("widget token's subdomain does not match its iss")
    is_admin = claims.get("is_admin")
    return WidgetClaims(
        account_id=claims["account_id"],
        user_id=user_id,
        subdomain=subdomain,
        jti=jti.strip(),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC).replace(tzinfo=None),
        issuer_host=issuer_host,
        is_admin=is_admin if isinstance(is_admin, bool) else None,
    )


def spend_token(db: Database, claims: WidgetClaims) -> None:
    """Record the token's `jti`; a second use is refused (errors.Unauthorized)."""
    # Forget spent ids past their expiry (plus leeway) so the table stays small.
    db.execute(
        "DELETE FROM widget_token_uses WHERE expires_at < UTC_TIMESTAMP(6) - INTERVAL %s SECOND "
        "LIMIT 1000",
        (LEEWAY_SECONDS * 2,),
    )
    try:
        db.execute(
            "INSERT INTO widget_token_uses (jti, account_id, expires_at) VALUES (%s, %s, %s)",
            (claims.jti, claims.account_id, claims.expires_at),
        )
    except pymysql.err.IntegrityError as exc:
        raise errors.Unauthorized("widget token was already used", code="token_reused") from exc


def authenticate_widget(request: flask.Request, db: Database) -> tuple[WidgetClaims, AccountRow]:
    """Verify the request's X-Auth-Token, map it to a stored account and spend it."""
    token = request.headers.get(HEADER, "").strip()
    if not token:
        raise errors.Unauthorized(f"{HEADER} header is required", code="missing_token")
    claims = verify_widget_token(token)
    account = get_account(db, claims.account_id)
    if account is None:
        # The widget is used before the OAuth install reached us: nothing to attach the key to.
        raise errors.NotFound(
            "this amoCRM account is not authorized with amosync yet; install the integration",
            code="account_not_found",
        )
    if claims.issuer_host != account.host.lower():
        raise _refuse("widget token was issued by another amoCRM account (iss)")
    spend_token(db, claims)
    return claims, account
