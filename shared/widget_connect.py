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
from shared.sync_runs import latest_sync_run, request_sync, run_as_dict
from shared.tokens import amocrm_client_for
from shared.unisender_link import (
    forget_unisender_link,
    get_unisender_link,
    list_title_for,
    save_unisender_link,
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
        list_id = unisender.ensure_list(title)  # the real call that validates the key
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


def _start_first_sync(db: Database, account_id: int) -> dict[str, Any]:
    started = request_sync(db, account_id, kind="full", requested_by="widget")
    return {"run_id": started.run_id, "status": started.status, "created": started.created}


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
