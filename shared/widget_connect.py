"""An account's Unisender connection, as the widget drives it: connect, status, disconnect."""

from __future__ import annotations

import logging
from typing import Any

from shared import errors
from shared.accounts import AccountRow, amocrm_failures_recorded, record_amocrm_failure
from shared.amocrm.client import AmoCrmClient
from shared.amocrm.errors import AmoCrmError
from shared.contacts import EMAIL_TYPES, parse_email_types
from shared.db import Database
from shared.list_binding import holder_of, key_fingerprint, resolve_list
from shared.settings import get_settings
from shared.sync_runs import latest_sync_run, request_sync, run_as_dict
from shared.tokens import amocrm_client_for
from shared.unisender_link import (
    forget_unisender_link,
    get_unisender_link,
    list_title_for,
    save_unisender_link,
    unisender_client_for,
    unisender_client_for_key,
)
from shared.webhook_health import inspect as inspect_webhook
from shared.webhook_health import resubscribe
from shared.webhook_intake import (
    WEBHOOK_EVENTS,
    clear_webhook_secret,
    destination_prefix,
    ensure_webhook_secret,
    load_webhook_secret,
    webhook_destination,
)

log = logging.getLogger(__name__)

NAME_FIELD = "Name"
MAX_KEY_LENGTH = 200


def _check_api_key(api_key: object) -> str:
    if not isinstance(api_key, str) or not api_key.strip():
        raise errors.BadRequest("api_key is required", code="missing_parameter")
    key = api_key.strip()
    if len(key) > MAX_KEY_LENGTH or any(c.isspace() for c in key):
        raise errors.BadRequest(
            "api_key does not look like a Unisender key", code="invalid_api_key"
        )
    return key


def _check_email_types(raw: object) -> set[str] | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str | list):
        raise errors.BadRequest("email_types must be a list or a comma-separated string")
    types = parse_email_types(raw)
    if types is not None and not types <= EMAIL_TYPES:
        raise errors.BadRequest(
            f"email_types may hold only {', '.join(sorted(EMAIL_TYPES))}", code="invalid_parameter"
        )
    return types


def connect(
    db: Database, account: AccountRow, *, api_key: object, email_types: object = None
) -> dict[str, Any]:
    """Validate the key, ensure the list and Name field, subscribe webhooks, save, start a sync.

    Order matters: nothing is stored until Unisender accepted the key and amoCRM the webhook, so
    a bad key or an amoCRM refusal leaves the account as it was (a retry redoes every step,
    each of which is idempotent).
    """
    key = _check_api_key(api_key)
    types = _check_email_types(email_types)
    title = list_title_for(account_id=account.id, account_name=account.amo_name or account.name)
    with unisender_client_for_key(key) as unisender:
        # The real calls that validate the key; a list another account holds is a 409 here.
        list_id, title = resolve_list(
            db, unisender, account_id=account.id, fingerprint=key_fingerprint(key), title=title
        )
        unisender.ensure_field(NAME_FIELD)

    secret = ensure_webhook_secret(db, account.id)
    destination = webhook_destination(account.id, secret)
    with amocrm_failures_recorded(db, account.id):
        _subscribe_webhooks(amocrm_client_for(account, db=db), account.id, destination)

    link = save_unisender_link(db, account.id, api_key=key, list_id=list_id, list_title=title)
    db.execute(
        "UPDATE accounts SET email_types = %s WHERE id = %s",
        (",".join(sorted(types)) if types else None, account.id),
    )
    sync = _start_first_sync(db, account.id)
    log.info("unisender connected", extra={"account_id": account.id, "list_id": list_id})
    return {
        "connected": True,
        "account_id": account.id,
        "list_id": link.list_id,
        "list_title": link.list_title,
        "email_types": sorted(types) if types else None,
        "webhook": {"subscribed": True, "events": list(WEBHOOK_EVENTS)},
        "sync": sync,
    }


def _subscribe_webhooks(amo: AmoCrmClient, account_id: int, destination: str) -> None:
    current = [
        h for h in amo.list_webhooks() if h.destination.startswith(destination_prefix(account_id))
    ]
    for hook in current:
        if hook.destination != destination:
            amo.delete_webhook(hook.destination)  # an old secret of ours: it must stop working
    mine = next((h for h in current if h.destination == destination), None)
    if inspect_webhook(mine) != "enabled":
        resubscribe(amo, destination, mine)


def _start_first_sync(
    db: Database, account_id: int, *, requested_by: str = "widget"
) -> dict[str, Any]:
    started = request_sync(db, account_id, kind="full", requested_by=requested_by)
    return {"run_id": started.run_id, "status": started.status, "created": started.created}


def split_shared_list(db: Database, account: AccountRow) -> dict[str, Any]:
    """Give an account that shares another account's list a fresh list of its own.

    For links stored before lists were bound (migration 0012 kept each shared list with the
    account that connected first). The account gets the list titled for it (its id appended
    when UNISENDER_LIST_TITLE has no {account_id}), bound to it, with what we knew about the
    old list forgotten, and a full sync that fills it. The holder's own record of the shared
    list is forgotten too and a full sync queued for it: it re-imports every address the
    holder has, putting back what the other account's deletes had excluded. The old list is
    never emptied: nothing tells which of its addresses came only from the other account.
    """
    link = get_unisender_link(db, account.id)
    if link is None or link.list_id is None:
        raise errors.BadRequest(f"account {account.name!r} has no Unisender list connected")
    key = link.api_key.get_secret_value()
    fingerprint = key_fingerprint(key)
    holder = holder_of(db, fingerprint, link.list_id)
    if holder is not None and holder[0] == account.id:
        raise errors.Conflict(
            f"the list #{link.list_id} is bound to {account.name!r} itself; split the other "
            "account that uses it (amosync status shows which)",
            code="list_not_shared",
        )
    title = list_title_for(account_id=account.id, account_name=account.amo_name or account.name)
    if "{account_id}" not in get_settings().unisender_list_title:
        title = f"{title[:240]} ({account.id})"
    with unisender_client_for(link) as unisender:
        list_id, title = resolve_list(
            db, unisender, account_id=account.id, fingerprint=fingerprint, title=title
        )
        if list_id == link.list_id:
            raise errors.Conflict(
                f"the list titled {title!r} is the shared list itself; rename it in Unisender "
                "or change UNISENDER_LIST_TITLE, then split again",
                code="list_not_shared",
            )
        unisender.ensure_field(NAME_FIELD)
    save_unisender_link(db, account.id, api_key=key, list_id=list_id, list_title=title)
    sync = _start_first_sync(db, account.id, requested_by="split")
    holder_sync = None
    if holder is not None:
        db.execute("DELETE FROM list_members WHERE account_id = %s", (holder[0],))
        holder_sync = _start_first_sync(db, holder[0], requested_by="split")
    log.warning(
        "shared Unisender list split",
        extra={"account_id": account.id, "old_list_id": link.list_id, "list_id": list_id},
    )
    return {
        "account_id": account.id,
        "old_list_id": link.list_id,
        "list_id": list_id,
        "list_title": title,
        "sync": sync,
        "holder": {"account_id": holder[0], "name": holder[1], "sync": holder_sync}
        if holder
        else None,
    }


def status(db: Database, account: AccountRow) -> dict[str, Any]:
    """What the widget shows: connected or not, the list, the last sync."""
    link = get_unisender_link(db, account.id)
    last = latest_sync_run(db, account.id)
    failed = db.fetch_one(
        "SELECT COUNT(*) AS n FROM list_members WHERE account_id = %s AND state = 'failed'",
        (account.id,),
    )
    return {
        "account_id": account.id,
        "account_status": account.status,
        "connected": link is not None,
        "list_id": link.list_id if link else None,
        "list_title": link.list_title if link else None,
        "connected_at": link.connected_at.isoformat() + "Z" if link and link.connected_at else None,
        "webhook_subscribed": load_webhook_secret(db, account.id) is not None,
        "email_types": sorted(account.email_types) if account.email_types else None,
        "failed_emails": int(failed["n"]) if failed else 0,
        "last_sync": run_as_dict(last) if last else None,
    }


def disconnect(db: Database, account: AccountRow) -> dict[str, Any]:
    """Unsubscribe the webhooks and forget the key (the Unisender list itself is left alone)."""
    secret = load_webhook_secret(db, account.id)
    removed = False
    if secret is not None:
        try:
            amocrm_client_for(account, db=db).delete_webhook(
                webhook_destination(account.id, secret)
            )
            removed = True
        except AmoCrmError as exc:
            record_amocrm_failure(db, account.id, exc)
            # The secret is cleared below, so a hook we could not delete only earns 404s and
            # amoCRM disables it; the disconnect itself must not depend on amoCRM.
            log.warning(
                "could not delete the amoCRM webhook",
                extra={"account_id": account.id, "error": type(exc).__name__},
            )
    clear_webhook_secret(db, account.id)
    had_key = forget_unisender_link(db, account.id)
    log.info("unisender disconnected", extra={"account_id": account.id})
    return {"connected": False, "webhook_removed": removed, "key_forgotten": had_key}
