"""An account's link to Unisender: its API key (encrypted at rest) and its one list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from shared.crypto import DecryptionFailed, get_secret_box
from shared.db import Database, Row
from shared.list_binding import claim_list, key_fingerprint
from shared.settings import get_settings
from shared.sync import UNSUBSCRIBED
from shared.unisender.client import UnisenderClient


@dataclass(frozen=True)
class UnisenderLink:
    """What amosync needs to write into an account's Unisender list."""

    account_id: int
    api_key: SecretStr
    list_id: int | None
    list_title: str | None
    connected_at: datetime | None = None


def get_unisender_link(db: Database, account_id: int) -> UnisenderLink | None:
    """The account's link, or None when no key is stored (never connected, or disconnected)."""
    row = db.fetch_one(
        "SELECT account_id, api_key_enc, list_id, list_title, connected_at "
        "FROM unisender_settings WHERE account_id = %s",
        (account_id,),
    )
    if row is None:
        return None
    return UnisenderLink(
        account_id=int(row["account_id"]),
        api_key=SecretStr(get_secret_box().decrypt(row["api_key_enc"])),
        list_id=int(row["list_id"]) if row["list_id"] is not None else None,
        list_title=row["list_title"],
        connected_at=row["connected_at"],
    )


def save_unisender_link(
    db: Database, account_id: int, *, api_key: str, list_id: int, list_title: str
) -> UnisenderLink:
    """Store (or replace) the account's key and list, bound to the account; 409 if the list
    belongs to another account (`shared.list_binding`). The key is encrypted first.

    `list_members` records what we did in ONE list: with another key or list (or after a
    disconnect, when the old one is unknown) it is forgotten in the same transaction, so the
    first full sync imports every address instead of believing the new list already has them.
    Suppression records (`unsubscribed`) are kept on every reconnect: they say what a person
    chose about this account's mailings, not what we did in one list, and the safe reading is
    that a new key or list of the same sender does not undo an opt-out.
    """
    box = get_secret_box()
    fingerprint = key_fingerprint(api_key)
    with db.transaction() as cur:
        claim_list(cur, account_id=account_id, fingerprint=fingerprint, list_id=list_id)
        cur.execute(
            "SELECT api_key_enc, list_id FROM unisender_settings WHERE account_id = %s FOR UPDATE",
            (account_id,),
        )
        current = cur.fetchone()
        if current is None or not _same_list(current, api_key=api_key, list_id=list_id):
            cur.execute(
                "DELETE FROM list_members WHERE account_id = %s AND state <> %s",
                (account_id, UNSUBSCRIBED),
            )
        cur.execute(
            "INSERT INTO unisender_settings (account_id, api_key_enc, key_fingerprint, list_id, "
            "list_title) VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
            "api_key_enc = VALUES(api_key_enc), key_fingerprint = VALUES(key_fingerprint), "
            "list_id = VALUES(list_id), list_title = VALUES(list_title), "
            "connected_at = CURRENT_TIMESTAMP(6)",
            (account_id, box.encrypt(api_key), fingerprint, list_id, list_title),
        )
    link = get_unisender_link(db, account_id)
    assert link is not None
    return link


def _same_list(row: Row, *, api_key: str, list_id: int) -> bool:
    if row["list_id"] is None or int(row["list_id"]) != list_id:
        return False
    try:
        return get_secret_box().decrypt(row["api_key_enc"]) == api_key
    except DecryptionFailed:
        return False


def forget_unisender_link(db: Database, account_id: int) -> bool:
    """Delete the stored key (and list reference); True if there was one."""
    return db.execute("DELETE FROM unisender_settings WHERE account_id = %s", (account_id,)) > 0


def unisender_client_for(link: UnisenderLink) -> UnisenderClient:
    """A Unisender client for the link's key, configured from settings."""
    return unisender_client_for_key(link.api_key.get_secret_value())


def unisender_client_for_key(api_key: str) -> UnisenderClient:
    """A client for a key that is not stored yet (the widget validates it first)."""
    return UnisenderClient(api_key, base_url=get_settings().unisender_api_url)


LIST_TITLE_MAX = 255


def list_title_for(*, account_id: int, account_name: str) -> str:
    """The account's list title from UNISENDER_LIST_TITLE ({account_name}, {account_id}).

    A long name is shortened, never the id: cutting the title's end could cut the one part that
    keeps two accounts' titles apart. A name of only control characters or spaces counts as none.
    """
    template = get_settings().unisender_list_title.replace("{account_id}", str(account_id))
    room = LIST_TITLE_MAX - len(template.replace("{account_name}", ""))
    # Control characters and runs of whitespace are not a title: Unisender refuses a blank one.
    printable = "".join(ch if ch.isprintable() else " " for ch in account_name)
    name = (" ".join(printable.split()) or str(account_id))[: max(room, 0)]
    title = template.replace("{account_name}", name)[:LIST_TITLE_MAX].strip()
    return title or f"amoCRM {account_id}"
