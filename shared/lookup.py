"""Read-only views for operators and the widget: a page of an account's contacts, one address.

Both put what amoCRM or Unisender say beside our own state (`contacts`, `contact_emails`,
`list_members`), every query scoped by the account id.
"""

from __future__ import annotations

from typing import Any

from shared.accounts import AccountRow, amocrm_failures_recorded
from shared.amocrm.client import AmoCrmClient
from shared.amocrm.models import Contact
from shared.clock import iso_utc
from shared.contacts import email_type, load_enum_codes, select_emails, valid_email
from shared.db import Database, Row
from shared.sync import UNSUBSCRIBED, fetch_in
from shared.unisender.client import UnisenderClient


def _member_json(row: Row) -> dict[str, Any]:
    return {
        "email": row["email"],
        "state": row["state"],
        "name_sent": row["name_sent"],
        "error_code": row["error_code"],
        "error_message": row["error_message"],
        "updated_at": iso_utc(row["updated_at"]),
    }


def contacts_page(
    db: Database, amo: AmoCrmClient, account: AccountRow, *, page: int, limit: int
) -> dict[str, Any]:
    """One amoCRM page of the account's contacts (in id order) with our sync state for each."""
    # Only the first page is taken: the iterator would follow `next` links if asked for more.
    with amocrm_failures_recorded(db, account.id):  # a 401 after a refresh stops the account
        pages = amo.iter_contact_pages(limit=limit, order={"id": "asc"}, start_page=page)
        first = next(iter(pages), None)
    contacts = first.contacts if first is not None else []
    items = _with_sync_state(db, account, contacts)
    has_next = len(contacts) == limit
    return {
        "account": {"id": account.id, "name": account.name},
        "page": page,
        "limit": limit,
        "count": len(items),
        "contacts": items,
        # amoCRM has no total count: a full page may be followed by an empty one.
        "next_cursor": page + 1 if has_next else None,
    }


def _with_sync_state(
    db: Database, account: AccountRow, contacts: list[Contact]
) -> list[dict[str, Any]]:
    codes = load_enum_codes(db, account.id)
    allowed = set(account.email_types) if account.email_types else None
    ids = [c.id for c in contacts]
    stored: dict[int, Row] = {}
    held: dict[int, list[str]] = {}
    for row in fetch_in(
        db,
        "SELECT contact_id, name, amo_updated_at, is_deleted, seen_in_run, updated_at "
        "FROM contacts",
        "contact_id",
        account.id,
        ids,
    ):
        stored[int(row["contact_id"])] = row
    sql = "SELECT contact_id, email FROM contact_emails"
    for row in fetch_in(db, sql, "contact_id", account.id, ids):
        held.setdefault(int(row["contact_id"]), []).append(str(row["email"]))
    selected = {
        c.id: select_emails(c.email_values(), enum_codes=codes, allowed_types=allowed)
        for c in contacts
    }
    emails = sorted(
        {e for es in selected.values() for e in es} | {e for es in held.values() for e in es}
    )
    sql = "SELECT email, state, name_sent, error_code, error_message, updated_at FROM list_members"
    members = {str(row["email"]): row for row in fetch_in(db, sql, "email", account.id, emails)}
    items: list[dict[str, Any]] = []
    for contact in contacts:
        ours = stored.get(contact.id)
        synced = selected[contact.id]
        addresses = sorted(set(synced) | set(held.get(contact.id, [])))
        items.append(
            {
                "id": contact.id,
                "name": contact.name,
                "first_name": contact.first_name,
                "last_name": contact.last_name,
                "updated_at": contact.updated_at,
                "emails": [
                    {
                        "value": v.value,
                        "type": email_type(v, codes),
                        "syncs": valid_email(v.value) in synced,
                    }
                    for v in contact.email_values()
                ],
                "phones": [{"value": v.value, "type": v.enum_code} for v in contact.phone_values()],
                "sync": {
                    "known": ours is not None,
                    "amo_updated_at": int(ours["amo_updated_at"]) if ours else None,
                    "up_to_date": ours is not None
                    and int(ours["amo_updated_at"]) >= contact.updated_at,
                    "last_seen_run": ours["seen_in_run"] if ours else None,
                    "emails": [
                        _member_json(members[e])
                        if e in members
                        else {"email": e, "state": "pending"}
                        for e in addresses
                    ],
                },
            }
        )
    return items


def contact_view(
    db: Database,
    uni: UnisenderClient,
    account: AccountRow,
    *,
    email: str,
    list_id: int | None,
) -> dict[str, Any] | None:
    """Unisender's view of one address through the account's key, plus ours; None if unknown."""
    found = uni.get_contact(email, include_lists=True, include_fields=True)
    member = db.fetch_one(
        "SELECT email, state, name_sent, error_code, error_message, updated_at "
        "FROM list_members WHERE account_id = %s AND email = %s",
        (account.id, email),
    )
    holders = db.fetch_all(
        "SELECT c.contact_id, c.name, c.is_deleted FROM contact_emails e JOIN contacts c "
        "ON c.account_id = e.account_id AND c.contact_id = e.contact_id "
        "WHERE e.account_id = %s AND e.email = %s ORDER BY c.contact_id LIMIT 100",
        (account.id, email),
    )
    if found is None and member is None and not holders:
        return None
    unisender: dict[str, Any] | None = None
    if found is not None:
        ours = next((lst for lst in found.lists if list_id is not None and lst.id == list_id), None)
        unisender = {
            "email": found.email,
            "status": found.status,
            "availability": found.availability,
            "added_at": found.added_at,
            "lists": [
                {"id": lst.id, "status": lst.status, "added_at": lst.added_at}
                for lst in found.lists
            ],
            "fields": found.fields,
            "in_account_list": ours is not None,
            # On the list is not the same as receiving its mail: someone who unsubscribed (from
            # our list, or from everything) stays listed with that status.
            "list_status": ours.status if ours is not None else None,
            "subscribed": ours is not None
            and ours.status != UNSUBSCRIBED
            and found.status != UNSUBSCRIBED,
        }
    return {
        "email": email,
        "account": {"id": account.id, "name": account.name, "list_id": list_id},
        "unisender": unisender,
        "sync": {
            "member": _member_json(member) if member else None,
            "contacts": [
                {"id": int(h["contact_id"]), "name": h["name"], "deleted": bool(h["is_deleted"])}
                for h in holders
            ],
        },
    }
