"""Typed shapes of what amosync sends to and reads from the Unisender API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def _lenient_int(value: object) -> object:
    # Clients disagree on number types (the Bitrix module casts counters with (int), another
    # client reads `index` as a string), so accept ints, numeric strings and empties.
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return int(float(text))
    if isinstance(value, float):
        return int(value)
    return value


LenientInt = Annotated[int, BeforeValidator(_lenient_int)]


def canonical_email(value: str) -> str:
    """Trim and lower-case an address: Unisender's own normalization is undocumented."""
    return value.strip().lower()


class _Model(BaseModel):
    # Unisender says "more fields may be added later": ignore unknown keys.
    model_config = ConfigDict(extra="ignore", frozen=True)


class MailingList(_Model):
    """One list from getLists."""

    id: LenientInt
    title: str


class ContactField(_Model):
    """One user field from getFields; its `name` is the importContacts column."""

    id: LenientInt
    name: str
    type: str = "string"
    public_name: str | None = None


class ImportRow(_Model):
    """One contact for importContacts; the email is the identity key."""

    email: str
    name: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    list_ids: tuple[int, ...] = ()
    excluded_list_ids: tuple[int, ...] = ()
    delete: bool = False

    @field_validator("email")
    @classmethod
    def _normalize(cls, value: str) -> str:
        email = canonical_email(value)
        if not email:
            raise ValueError("email is empty")
        return email


class RowError(_Model):
    """A row importContacts refused (role or invalid address), mapped back to its email."""

    email: str
    code: str
    message: str


class ImportResult(_Model):
    """Counters summed over every importContacts call of one import."""

    total: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    new_emails: int = 0
    invalid: int = 0
    row_errors: list[RowError] = Field(default_factory=list)
    # `log` entries of rows that WERE imported (the address is on the list): notes, not failures.
    row_warnings: list[RowError] = Field(default_factory=list)
    calls: int = 0
    chunk_sizes: list[int] = Field(default_factory=list)


class ImportLogEntry(_Model):
    """One `log[]` entry: `index` is the 0-based row of that call's `data`."""

    index: LenientInt
    code: str = ""
    message: str = ""

    @field_validator("code", "message", mode="before")
    @classmethod
    def _text(cls, value: object) -> str:
        return "" if value is None else str(value)


class ImportChunkResult(_Model):
    """The raw `result` of one importContacts call."""

    total: LenientInt = 0
    inserted: LenientInt = 0
    updated: LenientInt = 0
    deleted: LenientInt = 0
    new_emails: LenientInt = 0
    invalid: LenientInt = 0
    log: list[ImportLogEntry] = Field(default_factory=list)


class ContactList(_Model):
    """A contact's membership in one list (getContact `lists[]`)."""

    id: LenientInt
    status: str = ""
    added_at: str | None = None


class UnisenderContact(_Model):
    """One contact as getContact returns it."""

    email: str
    status: str = ""
    availability: str | None = None
    added_at: str | None = None
    lists: list[ContactList] = Field(default_factory=list)
    fields: dict[str, str | None] = Field(default_factory=dict)
    rating: float | None = None
    last_send_datetime: str | None = None
    last_delivery_datetime: str | None = None
    last_read_datetime: str | None = None
    last_click_datetime: str | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _fields(cls, value: object) -> object:
        if value is None or value == []:
            return {}  # PHP serializes an empty associative array as []
        if isinstance(value, Mapping):
            return {str(k): None if v is None else str(v) for k, v in value.items()}
        return value

    @field_validator("lists", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return [] if value is None else value

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> UnisenderContact | None:
        """Parse getContact's `result`: lists/fields at top level or nested inside `email`."""
        email_part = result.get("email")
        if not isinstance(email_part, Mapping) or not email_part.get("email"):
            return None
        data: dict[str, Any] = dict(email_part)
        # The documented shape keeps lists/fields beside `email`; one public client reads them
        # from inside `email`. Top level wins when both are present.
        for key in ("lists", "fields"):
            if key in result:
                data[key] = result[key]
        return cls.model_validate(data)


def _id_set(value: object) -> object:
    # Export cells hold list ids as one comma-separated string ("" when none).
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(int(part) for part in value.split(",") if part.strip())
    return value


IdSet = Annotated[frozenset[int], BeforeValidator(_id_set)]


class ListStatus(_Model):
    """One address of a list export: its account-wide status and its per-list opt-outs."""

    email: str
    status: str = ""
    list_ids: IdSet = frozenset()
    unsubscribed_list_ids: IdSet = frozenset()

    @field_validator("email")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return canonical_email(value)

    def unsubscribed_from(self, list_id: int) -> bool:
        """Whether the person opted out: account-wide, or from this list."""
        return self.status == "unsubscribed" or list_id in self.unsubscribed_list_ids

    @classmethod
    def from_contact(cls, contact: UnisenderContact) -> ListStatus:
        """The same facts read from one getContact answer (`include_lists=1`)."""
        return cls(
            email=contact.email,
            status=contact.status,
            list_ids=frozenset(m.id for m in contact.lists),
            unsubscribed_list_ids=frozenset(
                m.id for m in contact.lists if m.status == "unsubscribed"
            ),
        )
