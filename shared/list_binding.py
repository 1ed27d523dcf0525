"""One Unisender list, one account: which account of ours a list belongs to, bound by id.

A list is found by title only once, when an account connects; from then on the account is
bound to the list's id under the Unisender key it was found with (the key's fingerprint, never
the key). A binding row exists once per (key, list), so two accounts of ours can never hold the
same list: a title lookup that lands on another account's list is refused (`ListTaken`, 409)
instead of adopting it. Whether Unisender list ids are unique across Unisender accounts is not
documented [unverified]; binding per key is right either way.

Links stored before bindings existed were bound by migration 0012 (the earliest connected
account of a shared list keeps it); the others are reported as sharing (`shared_lists`) until
an operator splits them (`amosync lists split <name>`), and their full syncs refuse to run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.crypto import DecryptionFailed, get_secret_box, sha256_hex
from shared.db import Database
from shared.errors import ListTaken
from shared.unisender.client import UnisenderClient

log = logging.getLogger(__name__)


def key_fingerprint(api_key: str) -> str:
    """A stable, non-reversible id of a Unisender key (keys are long random strings).

    Not keyed with ENCRYPTION_KEY on purpose: the binding must survive a key rotation.
    """
    return sha256_hex(f"amosync:unisender-key:{api_key}")


@dataclass(frozen=True)
class SharedList:
    """An account whose stored list is bound to another account (or to none)."""

    account_id: int
    account_name: str
    list_id: int
    list_title: str | None
    holder_id: int | None
    holder_name: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "account_name": self.account_name,
            "list_id": self.list_id,
            "list_title": self.list_title,
            "bound_to_account_id": self.holder_id,
            "bound_to_account_name": self.holder_name,
        }


def list_taken(
    list_id: int, title: str | None, holder_id: int, holder_name: str | None
) -> ListTaken:
    shown = f"{title!r} (#{list_id})" if title else f"#{list_id}"
    return ListTaken(
        f"the Unisender list {shown} already belongs to amoCRM account {holder_id}"
        f"{f' ({holder_name})' if holder_name else ''} of this service; one list serves one "
        "account. Use another Unisender key, or set UNISENDER_LIST_TITLE with {account_id} "
        "so each account gets a list of its own."
    )


def holder_of(db: Database, fingerprint: str, list_id: int) -> tuple[int, str | None] | None:
    """The account (id, name) bound to this list under this key, if any."""
    row = db.fetch_one(
        "SELECT b.account_id, a.name FROM unisender_list_bindings b "
        "LEFT JOIN accounts a ON a.id = b.account_id "
        "WHERE b.key_fingerprint = %s AND b.list_id = %s",
        (fingerprint, list_id),
    )
    return (int(row["account_id"]), row["name"]) if row else None


def bound_list(db: Database, account_id: int, fingerprint: str) -> int | None:
    """The list this account is bound to under this key (the newest binding), if any."""
    row = db.fetch_one(
        "SELECT list_id FROM unisender_list_bindings WHERE account_id = %s "
        "AND key_fingerprint = %s ORDER BY bound_at DESC, list_id DESC LIMIT 1",
        (account_id, fingerprint),
    )
    return int(row["list_id"]) if row else None


def resolve_list(
    db: Database, client: UnisenderClient, *, account_id: int, fingerprint: str, title: str
) -> tuple[int, str]:
    """The account's list (id, title) under this key: its bound one if it still exists, else
    the list titled `title` (created if absent) unless another account holds it (409).
    """
    bound = bound_list(db, account_id, fingerprint)
    if bound is not None:
        current = next((lst.title for lst in client.get_lists() if lst.id == bound), None)
        if current is not None:
            return bound, current
        log.warning(
            "the bound Unisender list is gone; finding one by title",
            extra={"account_id": account_id, "list_id": bound},
        )
    list_id = client.ensure_list(title)
    holder = holder_of(db, fingerprint, list_id)
    if holder is not None and holder[0] != account_id:
        raise list_taken(list_id, title, *holder)
    return list_id, title


def claim_list(cur: Any, *, account_id: int, fingerprint: str, list_id: int) -> None:
    """Bind the list to the account inside the caller's transaction; 409 if another holds it.

    The primary key (key_fingerprint, list_id) decides a race between two connects: the loser's
    INSERT IGNORE adds nothing and the SELECT below names the winner.
    """
    cur.execute(
        "INSERT IGNORE INTO unisender_list_bindings (key_fingerprint, list_id, account_id) "
        "VALUES (%s, %s, %s)",
        (fingerprint, list_id, account_id),
    )
    cur.execute(
        "SELECT b.account_id, a.name FROM unisender_list_bindings b "
        "LEFT JOIN accounts a ON a.id = b.account_id "
        "WHERE b.key_fingerprint = %s AND b.list_id = %s FOR UPDATE",
        (fingerprint, list_id),
    )
    row = cur.fetchone()
    holder = int(row["account_id"] if isinstance(row, dict) else row[0])
    if holder != account_id:
        name = row["name"] if isinstance(row, dict) else row[1]
        raise list_taken(list_id, None, holder, name)


def sync_refusal(db: Database, *, account_id: int, api_key: str, list_id: int) -> str | None:
    """Why a sync must not write into this list (bound to another account), else None.

    Asked before every full sync and every batch of webhook events, so the usual answer (the
    list is bound to this very account) is one read; only a list nobody is bound to yet (a link
    stored before bindings existed) is claimed, in a transaction.
    """
    fingerprint = key_fingerprint(api_key)
    holder = holder_of(db, fingerprint, list_id)
    if holder is not None and holder[0] == account_id:
        return None
    if holder is not None:
        taken = list_taken(list_id, None, *holder)
    else:
        try:
            with db.transaction() as cur:
                claim_list(cur, account_id=account_id, fingerprint=fingerprint, list_id=list_id)
            return None
        except ListTaken as exc:  # another account claimed it a moment ago
            taken = exc
    row = db.fetch_one("SELECT name FROM accounts WHERE id = %s", (account_id,))
    name = row["name"] if row else str(account_id)
    return f"{taken.message} Split it: amosync lists split {name}"


def shared_lists(db: Database) -> list[SharedList]:
    """Connected accounts whose stored list is not bound to them: they share another's list."""
    rows = db.fetch_all(
        "SELECT u.account_id, a.name AS account_name, u.list_id, u.list_title, "
        "b.account_id AS holder_id, h.name AS holder_name "
        "FROM unisender_settings u JOIN accounts a ON a.id = u.account_id "
        "LEFT JOIN unisender_list_bindings b "
        "ON b.key_fingerprint = u.key_fingerprint AND b.list_id = u.list_id "
        "LEFT JOIN accounts h ON h.id = b.account_id "
        "WHERE u.list_id IS NOT NULL AND (b.account_id IS NULL OR b.account_id <> u.account_id) "
        "ORDER BY u.list_id, u.account_id"
    )
    return [
        SharedList(
            account_id=int(r["account_id"]),
            account_name=r["account_name"],
            list_id=int(r["list_id"]),
            list_title=r["list_title"],
            holder_id=int(r["holder_id"]) if r["holder_id"] is not None else None,
            holder_name=r["holder_name"],
        )
        for r in rows
    ]


def backfill_bindings(cursor: Any) -> int:
    """Migration 0012: fingerprint stored keys and bind each list to its first account.

    Rows are taken in connection order, so the account that connected first keeps a shared
    list; the later ones stay unbound and show up in `shared_lists`. A key the current
    ENCRYPTION_KEY cannot read is skipped (it shows up as unbound too). Returns the number of
    links that could not be bound.
    """
    cursor.execute(
        "SELECT account_id, api_key_enc, list_id FROM unisender_settings "
        "WHERE list_id IS NOT NULL ORDER BY connected_at, account_id"
    )
    rows: Sequence[Any] = cursor.fetchall()
    box = get_secret_box()
    unbound = 0
    for row in rows:
        account_id, api_key_enc, list_id = (
            (row["account_id"], row["api_key_enc"], row["list_id"])
            if isinstance(row, dict)
            else row
        )
        try:
            fingerprint = key_fingerprint(box.decrypt(api_key_enc))
        except DecryptionFailed:
            unbound += 1
            continue
        cursor.execute(
            "UPDATE unisender_settings SET key_fingerprint = %s WHERE account_id = %s",
            (fingerprint, account_id),
        )
        unbound += 1 - cursor.execute(
            "INSERT IGNORE INTO unisender_list_bindings (key_fingerprint, list_id, account_id) "
            "VALUES (%s, %s, %s)",
            (fingerprint, list_id, account_id),
        )
    if unbound:
        log.warning(
            "Unisender lists shared by several accounts (or unreadable keys) found; "
            "see `amosync status` and split them with `amosync lists split <name>`",
            extra={"unbound_links": unbound},
        )
    return unbound
