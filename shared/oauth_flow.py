"""The amoCRM install flow behind /auth: state, referer check, code exchange, storing the account.

Order matters for security: the `referer` host is checked against AMOCRM_ALLOWED_DOMAINS before
any request leaves (the token call carries the client secret), and the single-use `state` is
consumed before the code is exchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

import pymysql

from shared.accounts import AccountRow, get_account, get_account_by_name
from shared.amocrm.client import AmoCrmClient, StaticTokenProvider
from shared.amocrm.errors import OAuthRejected, Transient
from shared.amocrm.models import Account, TokenPair
from shared.clock import utcnow
from shared.crypto import new_secret, sha256_hex
from shared.db import Database
from shared.errors import BadRequest, Conflict, Unauthorized
from shared.ratelimit import IntervalThrottle
from shared.settings import Settings
from shared.tokens import build_oauth, encrypted_pair

log = logging.getLogger(__name__)

# post_message: the consent page redirects inside the window the user opened (our /auth link is
# a plain top-level navigation, not a popup a parent page waits on), so our result page shows
# there. popup would close that window and redirect an opener we do not have.
AUTH_MODE = "post_message"
# Local names appear in URLs (?name=) and in the CLI: letters, digits, dot, dash, underscore.
NAME_RE = re.compile(r"^[\w.\-]{1,100}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TRUE = {"1", "true", "yes", "on"}
# amoCRM's widget install (the server-to-server GET with from_widget) waits about 3 s for our
# answer, then hangs up. The handler keeps running after that (gunicorn and Flask do not abort a
# request whose client left), so a slower install still completes server-side: the code is
# exchanged and the account stored, amoCRM just never reads our 200. Being quick matters, but
# not at the price of failing: the code is single-use and already spent once exchanged, so the
# account read after it may retry. What is capped is the total: a person's browser waits on the
# same flow, and nginx gives /auth 30 s. Each request gets INSTALL_TIMEOUT (connect, read); the
# code exchange and the account read together get INSTALL_BUDGET_SECONDS, a retry starts only if
# it can finish inside it, and a 429 is never waited out inline.
INSTALL_TIMEOUT = (3.0, 7.0)
INSTALL_BUDGET_SECONDS = 20.0


def validate_name(name: str) -> str:
    """A local account name, or a 400 saying what is allowed."""
    if not NAME_RE.fullmatch(name):
        raise BadRequest(
            "name must be 1-100 letters, digits, '.', '-' or '_'", code="invalid_parameter"
        )
    return name


def allowed_host(referer: str, allowed_domains: tuple[str, ...]) -> str:
    """The account host from `referer`: one DNS label directly under an allowed amoCRM domain.

    amoCRM sends a bare host (`acme.amocrm.ru`); anything else is refused before the code is
    exchanged (the token call carries our client secret to this host): a scheme, port, path,
    userinfo, an IP address, a look-alike such as `amocrm.ru.evil.com`, the bare apex
    (`amocrm.ru` is no account), a deeper name (`a.b.amocrm.ru`), a trailing dot (another
    spelling of the same name that would be stored as a second host) and punycode or other
    IDNA-reserved labels (`xn--…`, look-alikes of a real subdomain in the address bar).
    """
    host = referer.lower()
    labels = host.split(".")
    if len(host) > 253 or len(labels) < 3 or not all(_LABEL_RE.fullmatch(x) for x in labels):
        raise BadRequest("referer is not an amoCRM account host", code="referer_not_allowed")
    if any(label[2:4] == "--" for label in labels):
        raise BadRequest(
            "referer must not hold punycode or IDNA-reserved labels", code="referer_not_allowed"
        )
    if host.split(".", 1)[1] in allowed_domains:
        return host
    raise BadRequest(
        "referer is not an account subdomain of an allowed amoCRM domain",
        code="referer_not_allowed",
    )


def account_host(referer_host: str, amo: Account) -> str:
    """The host to store: the account's own subdomain (from amoCRM) under the referer's domain.

    The referer is checked but is still what the redirect says; the subdomain amoCRM reports
    for the account the tokens belong to is the authority, so a well-formed but foreign
    referer (`other.amocrm.ru`) never overwrites the stored host.
    """
    domain = referer_host.split(".", 1)[1]
    subdomain = amo.subdomain.lower()
    if not _LABEL_RE.fullmatch(subdomain) or subdomain[2:4] == "--":
        return referer_host
    host = f"{subdomain}.{domain}"
    if host != referer_host:
        log.warning(
            "referer host differs from the account's subdomain; keeping the account's",
            extra={"account_id": amo.id, "referer": referer_host, "host": host},
        )
    return host


def disable_signature(client_secret: str, client_uuid: str, account_id: str) -> str:
    """amoCRM's disable-hook signature: hex HMAC-SHA256 of `client_uuid|account_id`."""
    message = f"{client_uuid}|{account_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


# --- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthState:
    """What a consumed state remembers: the local name and whether an admin allowed a rebind."""

    name: str
    rebind_allowed: bool


def create_state(db: Database, name: str, *, rebind_allowed: bool, ttl: timedelta) -> str:
    """A new single-use state for `name`; only its hash is stored."""
    state = new_secret(32)
    now = utcnow()
    db.execute(
        "INSERT INTO oauth_states (state_hash, name, rebind_allowed, created_at, expires_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        (sha256_hex(state), name, int(rebind_allowed), now, now + ttl),
    )
    # Housekeeping on the way: states older than a day are useless even for forensics.
    db.execute(
        "DELETE FROM oauth_states WHERE expires_at < %s LIMIT 100", (now - timedelta(days=1),)
    )
    return state


def consume_state(db: Database, state: str) -> OAuthState:
    """Mark the state used (once, before it expires) and return what it carries; else 400."""
    state_hash = sha256_hex(state)
    # One UPDATE decides it: two callbacks racing with the same state cannot both win.
    used = db.execute(
        "UPDATE oauth_states SET used_at = %s "
        "WHERE state_hash = %s AND used_at IS NULL AND expires_at > %s",
        (utcnow(), state_hash, utcnow()),
    )
    if used != 1:
        raise BadRequest(
            "the authorization request is unknown, expired or already used; start again",
            code="invalid_state",
        )
    row = db.fetch_one(
        "SELECT name, rebind_allowed FROM oauth_states WHERE state_hash = %s", (state_hash,)
    )
    assert row is not None
    return OAuthState(name=row["name"], rebind_allowed=bool(row["rebind_allowed"]))


def start_authorization(
    db: Database, settings: Settings, *, name: str, rebind: bool, is_admin: bool
) -> str:
    """The consent URL to send the browser to for installing under `name`."""
    validate_name(name)
    if rebind and not is_admin:
        raise Unauthorized(
            "rebinding a name needs admin credentials (Authorization: Bearer <ADMIN_TOKEN>)"
        )
    if not settings.amocrm_client_id:
        raise BadRequest("AMOCRM_CLIENT_ID is not configured", code="not_configured")
    state = create_state(
        db, name, rebind_allowed=rebind, ttl=timedelta(minutes=settings.oauth_state_ttl_minutes)
    )
    query = urlencode({"client_id": settings.amocrm_client_id, "state": state, "mode": AUTH_MODE})
    sep = "&" if "?" in settings.amocrm_auth_url else "?"
    return f"{settings.amocrm_auth_url}{sep}{query}"


# --- callback ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallResult:
    """The stored account and what happened to names on the way."""

    account: AccountRow
    created: bool
    displaced_name: str | None = None  # the other account's new name after an admin rebind


def complete_authorization(
    db: Database,
    settings: Settings,
    *,
    code: str,
    referer: str,
    state: str | None,
    from_widget: bool,
    client_id: str | None,
) -> InstallResult:
    """Verify the redirect, exchange the code, read the account and store it with its tokens."""
    if client_id is not None and not hmac.compare_digest(client_id, settings.amocrm_client_id):
        raise BadRequest("client_id is not this integration's", code="invalid_client_id")
    # Before anything leaves: the token call below carries our client secret to this host.
    host = allowed_host(referer, settings.allowed_domains)
    deadline = time.monotonic() + INSTALL_BUDGET_SECONDS
    wanted: OAuthState | None = None
    if not from_widget:
        # amoCRM's widget install comes server-to-server with no state; every browser
        # redirect must bring back one we issued.
        if state is None:
            raise BadRequest("query parameter 'state' is required", code="missing_parameter")
        wanted = consume_state(db, state)
        if not wanted.rebind_allowed:
            # Before the code is spent: a name held by an account on another host is a 409
            # the user can act on, with the code still unused (store_installation re-checks
            # by account id once amoCRM has said which account the code is for).
            check_name_free(db, wanted.name, host)
    oauth = build_oauth(settings, timeout=INSTALL_TIMEOUT)
    try:
        pair = oauth.exchange_code(host, code)
    except OAuthRejected as exc:
        raise BadRequest(
            f"amoCRM refused the authorization code ({exc.hint or 'rejected'}); start again",
            code="code_rejected",
        ) from exc
    amo = read_account(settings, host, pair, deadline=deadline)
    result = store_installation(
        db,
        amo=amo,
        host=account_host(host, amo),
        pair=pair,
        name=wanted.name if wanted else None,
        rebind_allowed=bool(wanted and wanted.rebind_allowed),
    )
    log.info(
        "account authorized",
        extra={
            "account_id": amo.id,
            "host": host,
            "account_name": result.account.name,
            "new_account": result.created,
            "from_widget": from_widget,
        },
    )
    return result


def check_name_free(db: Database, name: str, host: str) -> None:
    """409 when `name` belongs to an account stored under another host."""
    holder = get_account_by_name(db, name)
    if holder is not None and holder.host != host:
        raise name_taken(name)


def name_taken(name: str) -> Conflict:
    return Conflict(
        f"the name {name!r} belongs to another amoCRM account; an admin can "
        f"rebind it: GET /auth?name={name}&rebind=1 with the admin bearer",
        code="name_taken",
    )


def read_account(
    settings: Settings, host: str, pair: TokenPair, *, deadline: float | None = None
) -> Account:
    """`GET /api/v4/account` with the fresh token (the id is what everything keys on).

    `deadline` (time.monotonic()) ends the install budget: the first request always goes, a
    retry only if it can still finish before it.
    """
    budget_end = deadline if deadline is not None else time.monotonic() + INSTALL_BUDGET_SECONDS

    def sleep_within_budget(seconds: float) -> None:
        if time.monotonic() + seconds + sum(INSTALL_TIMEOUT) > budget_end:
            raise Transient("amoCRM did not answer GET /api/v4/account within the install budget")
        time.sleep(seconds)

    # The account id (the shared throttle's key) is what this call finds out; one request
    # outside the shared schedule is well within amoCRM's limits.
    client = AmoCrmClient(
        settings.amocrm_api_url or f"https://{host}",
        StaticTokenProvider(pair.access_token.get_secret_value()),
        throttle=IntervalThrottle(rate=settings.amocrm_rate_limit_rps),
        timeout=INSTALL_TIMEOUT,
        max_attempts=2,
        backoff_base=0.5,
        backoff_cap=1.0,
        max_inline_wait=1.0,
        sleep=sleep_within_budget,
    )
    return client.get_account(with_=())


def store_installation(
    db: Database,
    *,
    amo: Account,
    host: str,
    pair: TokenPair,
    name: str | None,
    rebind_allowed: bool,
) -> InstallResult:
    """Upsert the account and its encrypted tokens in one transaction."""
    access, refresh, expires = encrypted_pair(pair)
    displaced: str | None = None
    try:
        with db.transaction() as cur:
            cur.execute("SELECT id, name FROM accounts WHERE id = %s FOR UPDATE", (amo.id,))
            existing = cur.fetchone()
            if name is None:
                # Widget install: keep a known account's name, else derive one from the subdomain.
                final_name = existing["name"] if existing else _free_name(cur, amo)
            else:
                cur.execute("SELECT id FROM accounts WHERE name = %s FOR UPDATE", (name,))
                holder = cur.fetchone()
                if holder is not None and int(holder["id"]) != amo.id:
                    if not rebind_allowed:
                        raise name_taken(name)
                    displaced = f"{name}-{holder['id']}"
                    cur.execute(
                        "UPDATE accounts SET name = %s WHERE id = %s", (displaced, holder["id"])
                    )
                final_name = name
            cur.execute(
                "INSERT INTO accounts (id, name, host, amo_name, status, status_reason) "
                "VALUES (%s, %s, %s, %s, 'active', NULL) ON DUPLICATE KEY UPDATE "
                "name = VALUES(name), host = VALUES(host), amo_name = VALUES(amo_name), "
                "status = 'active', status_reason = NULL, paused_until = NULL, "
                "paused_reason = NULL",
                (amo.id, final_name, host, amo.name[:255]),
            )
            # refreshed_at stays NULL: it records refreshes, and a new grant is not one.
            cur.execute(
                "INSERT INTO oauth_tokens (account_id, access_token_enc, refresh_token_enc, "
                "expires_at, refreshed_at, generation) VALUES (%s, %s, %s, %s, NULL, 1) "
                "ON DUPLICATE KEY UPDATE access_token_enc = VALUES(access_token_enc), "
                "refresh_token_enc = VALUES(refresh_token_enc), expires_at = VALUES(expires_at), "
                "refreshed_at = NULL, generation = generation + 1",
                (amo.id, access, refresh, expires),
            )
    except pymysql.err.IntegrityError as exc:
        # Two installs raced for the same name: the loser gets the same answer as above.
        raise Conflict("that name was just taken by another account", code="name_taken") from exc
    account = get_account(db, amo.id)
    assert account is not None
    return InstallResult(account=account, created=existing is None, displaced_name=displaced)


def _free_name(cur: pymysql.cursors.DictCursor, amo: Account) -> str:
    base = amo.subdomain.lower() if NAME_RE.fullmatch(amo.subdomain) else f"account-{amo.id}"
    cur.execute("SELECT id FROM accounts WHERE name = %s", (base,))
    return base if cur.fetchone() is None else f"{base}-{amo.id}"


# --- disable hook --------------------------------------------------------------------------


def verify_disable_hook(settings: Settings, params: Mapping[str, str]) -> int:
    """The account id of a genuine amoCRM disable hook; 400 if malformed, 401 if forged."""
    missing = [k for k in ("client_uuid", "account_id", "signature") if not params.get(k)]
    if missing:
        raise BadRequest(f"query parameter '{missing[0]}' is required", code="missing_parameter")
    client_uuid, account_id, signature = (
        params["client_uuid"],
        params["account_id"],
        params["signature"].strip().lower(),
    )
    if not account_id.isdigit() or len(account_id) > 19:
        raise BadRequest("account_id must be a number", code="invalid_parameter")
    secret = settings.amocrm_client_secret.get_secret_value()
    expected = disable_signature(secret, client_uuid, account_id)
    # Both comparisons run regardless, in constant time, so timing says nothing about which failed.
    client_ok = hmac.compare_digest(client_uuid.encode(), settings.amocrm_client_id.encode())
    signature_ok = hmac.compare_digest(signature.encode(), expected.encode())
    if not (client_ok and signature_ok and secret):
        raise Unauthorized("invalid disable hook signature", code="invalid_signature")
    return int(account_id)


def disable_account(db: Database, account_id: int) -> bool:
    """Stop syncing the account and drop its tokens (its Unisender link stays); True if known.

    amoCRM's hook carries no nonce or time, so a captured one stays valid: a replay must
    change nothing more than the first delivery did, and still say the account is known.
    """
    with db.transaction() as cur:
        cur.execute("SELECT status FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
        row = cur.fetchone()
        first = row is not None and row["status"] != "disabled"
        if first:
            cur.execute(
                "UPDATE accounts SET status = 'disabled', "
                "status_reason = 'integration disabled in amoCRM' WHERE id = %s",
                (account_id,),
            )
        cur.execute("DELETE FROM oauth_tokens WHERE account_id = %s", (account_id,))
    if first:
        log.warning("account disabled by amoCRM hook", extra={"account_id": account_id})
    else:
        log.info(
            "disable hook for an account not active here",
            extra={"account_id": account_id, "known": row is not None},
        )
    return row is not None


# --- pages ---------------------------------------------------------------------------------


def render_page(title: str, message: str, *, ok: bool) -> str:
    """A small self-contained HTML page; every value is escaped."""
    color = "#1a7f37" if ok else "#b42318"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1 style='color:{color}'>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p></body></html>"
    )


def success_message(result: InstallResult) -> str:
    a = result.account
    text = (
        f"amoCRM account \u201c{a.amo_name or a.host}\u201d ({a.host}, id {a.id}) is authorized "
        f"as \u201c{a.name}\u201d."
    )
    if result.displaced_name:
        text += (
            f" The account that had this name before is now \u201c{result.displaced_name}\u201d."
        )
    return text


def is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE
