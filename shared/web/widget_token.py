"""The amoCRM widget's one-time `X-Auth-Token` JWT.

Verified like amoCRM's `parseDisposableToken` (reference §6.2): HS256 with the integration's
client secret, `aud` = the origin of our public URL, `nbf`/`exp` with a small leeway,
`client_uuid` = our client id; then `jti` is spent once (amoCRM itself does not prevent reuse
inside the token's ~30 min) and `account_id` must be an account we store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    is_admin: bool | None = None


def verify_widget_token(
    token: str, *, settings: Settings | None = None, now: float | None = None
) -> WidgetClaims:
    """Check the token's signature and claims; raises errors.Unauthorized saying why not."""
    settings = settings or get_settings()
    secret = settings.amocrm_client_secret.get_secret_value()
    if not secret or not settings.amocrm_client_id:
        raise errors.ServiceUnavailable("the amoCRM integration is not configured")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=settings.public_origin,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "nbf", "jti", "account_id", "client_uuid"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise errors.Unauthorized("widget token expired", code="token_expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise errors.Unauthorized("widget token not valid yet", code="invalid_token") from exc
    except jwt.InvalidAudienceError as exc:
        raise errors.Unauthorized("widget token is for another site", code="invalid_token") from exc
    except jwt.InvalidTokenError as exc:
        raise errors.Unauthorized(
            f"widget token rejected: {type(exc).__name__}", code="invalid_token"
        ) from exc
    if str(claims["client_uuid"]) != settings.amocrm_client_id:
        raise errors.Unauthorized("widget token is for another integration", code="invalid_token")
    current = now if now is not None else datetime.now(UTC).timestamp()
    if int(claims["exp"]) - current > MAX_LIFETIME_SECONDS:
        raise errors.Unauthorized("widget token lives too long", code="invalid_token")
    try:
        account_id = int(claims["account_id"])
        user_id = int(claims["user_id"]) if claims.get("user_id") is not None else None
    except (TypeError, ValueError) as exc:
        raise errors.Unauthorized(
            "widget token has a bad account_id", code="invalid_token"
        ) from exc
    jti = str(claims["jti"]).strip()
    if account_id <= 0 or not jti or len(jti) > 128:
        raise errors.Unauthorized("widget token has bad claims", code="invalid_token")
    is_admin = claims.get("is_admin")
    return WidgetClaims(
        account_id=account_id,
        user_id=user_id,
        subdomain=str(claims["subdomain"]) if claims.get("subdomain") else None,
        jti=jti,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC).replace(tzinfo=None),
        is_admin=bool(is_admin) if is_admin is not None else None,
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
    spend_token(db, claims)
    return claims, account
