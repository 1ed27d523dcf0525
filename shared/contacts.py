"""THE email rules of amosync: which addresses of an amoCRM contact go to Unisender.

Used by webhooks (enum *ids*, mapped through the account's cached custom-field enums) and by the
full sync (API values that already carry `enum_code`) alike, so both paths agree on every address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Protocol

from shared.amocrm.models import EMAIL_CODE, CustomField
from shared.clock import utcnow
from shared.db import Database

log = logging.getLogger(__name__)

# Email enum codes amoCRM knows (reference §3.3); used to validate the account setting.
EMAIL_TYPES = frozenset({"WORK", "PRIV", "OTHER"})

# Unisender's own validation is undocumented; this is the usual practical shape check: one @,
# no spaces, a dotted domain. Anything stricter would silently drop addresses people use.
_EMAIL_SHAPE = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+$"
)
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 255  # contacts.name, list_members.name_sent

# An unknown enum id triggers at most one custom-fields read per account in this window.
ENUM_REFRESH_MIN_INTERVAL = timedelta(seconds=60)


class EmailLike(Protocol):
    """A value of the EMAIL field: `shared.jobs.EmailValue` or `shared.amocrm.models.FieldValue`."""

    @property
    def value(self) -> str | None: ...

    @property
    def enum_id(self) -> int | None: ...

    @property
    def enum_code(self) -> str | None: ...


def valid_email(value: str | None) -> str | None:
    """Trimmed, lower-cased address, or None when it is not shaped like an email."""
    if value is None:
        return None
    email = value.strip().lower()
    if not email or len(email) > MAX_EMAIL_LENGTH or not _EMAIL_SHAPE.match(email):
        return None
    return email


def normalize_name(value: str | None) -> str:
    """The contact's name as stored and sent to Unisender's Name field: trimmed, bounded."""
    return (value or "").strip()[:MAX_NAME_LENGTH]


def contact_display_name(name: str, first_name: str = "", last_name: str = "") -> str:
    """The one name rule: amoCRM's `name`, else "first last" (amoCRM may send an empty `name`)."""
    return normalize_name(name) or normalize_name(f"{first_name} {last_name}")


def parse_email_types(raw: str | Iterable[str] | None) -> set[str] | None:
    """`accounts.email_types` ("WORK,PRIV") → {"WORK", "PRIV"}; empty or None → None (all)."""
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    types = {item.strip().upper() for item in items if item and item.strip()}
    return types or None


def email_type(value: EmailLike, enum_codes: Mapping[int, str]) -> str | None:
    """The value's enum code (WORK/PRIV/OTHER): its own code, else its id mapped per account."""
    if value.enum_code:
        return value.enum_code.upper()
    if value.enum_id is not None:
        code = enum_codes.get(value.enum_id)
        return code.upper() if code else None
    return None


def select_emails(
    values: Iterable[EmailLike],
    *,
    enum_codes: Mapping[int, str] | None = None,
    allowed_types: set[str] | frozenset[str] | None = None,
) -> list[str]:
    """The contact's addresses to sync: valid, normalized, de-duplicated, in field order.

    `allowed_types` None means every type. When it is set, a value whose type cannot be
    determined (unknown enum id) is left out: syncing an address the account excluded is worse
    than syncing it a little later, after the enum cache learns the id.
    """
    codes = enum_codes or {}
    seen: dict[str, None] = {}
    for value in values:
        email = valid_email(value.value)
        if email is None:
            continue
        if allowed_types is not None and email_type(value, codes) not in allowed_types:
            continue
        seen.setdefault(email, None)
    return list(seen)


def unknown_enum_ids(values: Iterable[EmailLike], enum_codes: Mapping[int, str]) -> set[int]:
    """Enum ids of values that carry no code and are not in the account's cached map."""
    return {
        v.enum_id
        for v in values
        if not v.enum_code and v.enum_id is not None and v.enum_id not in enum_codes
    }


def load_enum_codes(db: Database, account_id: int) -> dict[int, str]:
    """The account's cached EMAIL enum id → code map."""
    rows = db.fetch_all(
        "SELECT enum_id, enum_code FROM amo_field_enums WHERE account_id = %s AND field_code = %s",
        (account_id, EMAIL_CODE),
    )
    return {int(r["enum_id"]): str(r["enum_code"]) for r in rows}


def store_enum_codes(
    db: Database, account_id: int, fields: Iterable[CustomField]
) -> dict[int, str]:
    """Replace the account's cached enums with the ones just read from amoCRM."""
    now = utcnow()
    rows = [
        (account_id, enum.id, str(field.code), enum.value[:32], now)
        for field in fields
        if field.code
        for enum in field.enums
    ]
    with db.transaction() as cur:
        cur.execute("DELETE FROM amo_field_enums WHERE account_id = %s", (account_id,))
        if rows:
            cur.executemany(
                "INSERT INTO amo_field_enums (account_id, enum_id, field_code, enum_code, "
                "fetched_at) VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
    return {enum_id: code for _, enum_id, field_code, code, _ in rows if field_code == EMAIL_CODE}


def refresh_due(db: Database, account_id: int) -> bool:
    """Whether the enum cache is older than the refresh interval (or empty)."""
    row = db.fetch_one(
        "SELECT MAX(fetched_at) AS at FROM amo_field_enums WHERE account_id = %s", (account_id,)
    )
    fetched = row["at"] if row else None
    now = utcnow()
    return fetched is None or now - fetched >= ENUM_REFRESH_MIN_INTERVAL


def resolve_enum_codes(
    db: Database,
    account_id: int,
    values: Iterable[EmailLike],
    *,
    fetch_fields: Callable[[], list[CustomField]],
) -> dict[int, str]:
    """The account's enum map, refreshed from amoCRM once when `values` hold an unknown id."""
    values = list(values)
    codes = load_enum_codes(db, account_id)
    missing = unknown_enum_ids(values, codes)
    if missing and refresh_due(db, account_id):
        log.info(
            "refreshing amoCRM enum cache",
            extra={"account_id": account_id, "unknown": sorted(missing)[:10]},
        )
        codes = store_enum_codes(db, account_id, fetch_fields())
    return codes
