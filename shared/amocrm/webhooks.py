"""amoCRM webhook bodies: the bracketed form (`contacts[add][0][id]=…`) into typed contact events.

Facts (reference §4.2-4.4): one POST may carry several actions and several entities; companies
arrive under `contacts[...]` with `type=company`; custom fields use the v2 layout where `enum` is
the account-specific enum *id*; values may contain HTML entities; deletes carry only the id.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from shared.amocrm.models import EMAIL_CODE
from shared.jobs import ContactEvent, EmailValue

ACTIONS = ("add", "update", "delete", "restore")
MAX_PAIRS = 200_000
# Caps that keep one event far below beanstalkd's job size (a JobTooBigError used to be a 500):
# longer values cannot be email addresses (RFC 5321; shared.contacts drops them anyway).
MAX_EMAIL_LENGTH = 254
MAX_EMAILS_PER_CONTACT = 50
MAX_NAME_LENGTH = 255  # contacts.name / list_members.name_sent
MAX_EVENT_BYTES = 24_000  # one event's JSON; a job holds up to webhook_intake.MAX_JOB_BYTES
# amoCRM ids are BIGINT in our schema. `str.isdigit()` is true for "²" and int() refuses
# 4300+ digit strings: ASCII digits only, bounded, or the value is not an id.
MAX_ID = 2**63 - 1
_ID = re.compile(r"[0-9]{1,19}")

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

Tree = dict[str, Any]


class WebhookParseError(ValueError):
    """The body is not an amoCRM contacts webhook we can read; nothing may be queued."""


@dataclass(frozen=True)
class SkippedEntity:
    """One entity left out of an otherwise good POST; `reason` never holds personal data."""

    action: str
    index: str
    contact_id: int | None
    reason: str


@dataclass(frozen=True)
class ParsedWebhook:
    """Every contact event of one POST, in body order (add, update, delete, restore)."""

    account_id: int
    subdomain: str | None
    events: list[ContactEvent] = field(default_factory=list)
    ignored: int = 0  # companies, actions we do not handle
    skipped: list[SkippedEntity] = field(default_factory=list)  # malformed entities


def parse_form(body: bytes | str) -> Tree:
    """Decode an x-www-form-urlencoded body with PHP-style bracketed keys into nested dicts."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PAIRS
        )
    except ValueError as exc:
        raise WebhookParseError(f"not a form-encoded body: {exc}") from exc
    tree: Tree = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise WebhookParseError(f"malformed key {key[:80]!r}")
        path = [match.group(1), *_SEGMENT.findall(match.group(2))]
        node = tree
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if part == "":
                part = str(sum(1 for k in node if parse_id(k) is not None))  # `x[]` appends
            if last:
                if isinstance(node.get(part), dict):
                    raise WebhookParseError(f"key {key[:80]!r} is both a value and a group")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise WebhookParseError(f"key {key[:80]!r} is both a value and a group")
                node = child
    return tree


def parse_id(value: object) -> int | None:
    """A non-negative BIGINT written in ASCII digits, else None; never raises."""
    if not isinstance(value, str):
        return None
    text = value.strip(" \t")
    if _ID.fullmatch(text) is None:
        return None
    number = int(text)
    return number if number <= MAX_ID else None


def _items(group: object, where: str) -> list[Tree]:
    """The entities of `x[0]`, `x[1]`, … in numeric order."""
    if not isinstance(group, dict):
        raise WebhookParseError(f"{where} is not a group of entities")
    items: list[tuple[int, Tree]] = []
    for index, item in group.items():
        number = parse_id(index)
        if number is None or not isinstance(item, dict):
            raise WebhookParseError(f"{where} holds an entry that is not an indexed entity")
        items.append((number, item))
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def _text(value: object) -> str:
    return html.unescape(value) if isinstance(value, str) else ""


def _int(value: object, what: str, *, required: bool = False) -> int:
    if value is None or value == "":
        if required:
            raise WebhookParseError(f"{what} is missing")
        return 0
    number = parse_id(value)
    if number is None:
        raise WebhookParseError(f"{what} is not a number")
    return number


def _email_values(entity: Tree, where: str) -> list[EmailValue] | None:
    """Values of the EMAIL field (matched by `code`, never by the localized name).

    None when the entity carries no custom fields at all; [] when it has fields but no EMAIL.
    Values too long to be an address are dropped; at most MAX_EMAILS_PER_CONTACT are kept.
    """
    fields = entity.get("custom_fields")
    if fields is None:
        return None
    out: list[EmailValue] = []
    for cf in _items(fields, f"{where}[custom_fields]"):
        if str(cf.get("code", "")).strip().upper() != EMAIL_CODE:
            continue
        raw_values = cf.get("values")
        if raw_values is None:
            continue
        for raw in _items(raw_values, f"{where}[custom_fields][values]"):
            value = _text(raw.get("value"))
            if not value.strip() or len(value.strip()) > MAX_EMAIL_LENGTH:
                continue
            if len(out) == MAX_EMAILS_PER_CONTACT:
                return out
            enum = str(raw.get("enum", "")).strip()
            enum_id = parse_id(enum)
            if enum_id is not None:
                out.append(EmailValue(value=value, enum_id=enum_id))
            elif enum.isascii() and enum.isalpha():
                # Pre-2020 payloads put the code ("WORK") where the id is now.
                out.append(EmailValue(value=value, enum_code=enum[:32]))
            else:
                out.append(EmailValue(value=value))  # an enum we cannot read: type unknown
    return out


def _event(action: str, entity: Tree, where: str) -> ContactEvent:
    contact_id = _int(entity.get("id"), f"{where}[id]", required=True)
    if contact_id <= 0:
        raise WebhookParseError(f"{where}[id] must be positive")
    updated_at = _int(entity.get("updated_at"), f"{where}[updated_at]") or _int(
        entity.get("last_modified"), f"{where}[last_modified]"
    )
    emails = None if action == "delete" else _email_values(entity, where)
    if action in ("add", "update") and emails is None:
        # Updates carry the full field set (reference §4.3): no fields means no email now.
        emails = []
    try:
        event = ContactEvent(
            action=action,  # type: ignore[arg-type]
            contact_id=contact_id,
            name=_text(entity.get("name")).strip()[:MAX_NAME_LENGTH],
            updated_at=updated_at,
            emails=emails,
        )
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False) if e["loc"]})
        raise WebhookParseError(f"{where} does not fit a contact event ({fields})") from exc
    if len(event.model_dump_json()) > MAX_EVENT_BYTES:
        raise WebhookParseError(f"{where} is too large for one event")
    return event


def _account_id(tree: Tree) -> int:
    account = tree.get("account")
    if not isinstance(account, dict):
        raise WebhookParseError("not an amoCRM webhook: no account block")
    account_id = parse_id(account.get("id"))
    if not account_id:
        raise WebhookParseError("not an amoCRM webhook: account[id] is not an account id")
    return account_id


def parse_webhook(body: bytes | str) -> ParsedWebhook:
    """Every readable contact event of an amoCRM webhook POST.

    Raises WebhookParseError only when the body as a whole is not an amoCRM contacts webhook
    (not a form, no account block, no contacts group): nothing of it may be queued. Inside a
    real webhook, actions and entity types we do not handle are ignored and a malformed entity
    is skipped (with its reason) so the good ones still go through: refusing the whole POST
    would make amoCRM resend the same body until it disables the hook, losing them all.
    """
    try:
        tree = parse_form(body)
    except UnicodeDecodeError as exc:
        raise WebhookParseError("body is not UTF-8") from exc
    account_id = _account_id(tree)
    account = tree["account"]
    subdomain = _text(account.get("subdomain"))[:255] or None
    contacts = tree.get("contacts")
    if not isinstance(contacts, dict):
        raise WebhookParseError("not an amoCRM contacts webhook: no contacts entities")
    events: list[ContactEvent] = []
    skipped: list[SkippedEntity] = []
    ignored = sum(
        len(group) if isinstance(group, dict) else 1
        for action, group in contacts.items()
        if action not in ACTIONS
    )
    for action in ACTIONS:
        group = contacts.get(action)
        if group is None:
            continue
        if not isinstance(group, dict):
            skipped.append(SkippedEntity(action, "", None, "not a group of entities"))
            continue
        numbered: list[tuple[int, str, object]] = []
        for index, entity in group.items():
            number = parse_id(index)
            if number is None:
                skipped.append(SkippedEntity(action, index[:20], None, "index is not a number"))
            else:
                numbered.append((number, index, entity))
        for _, index, entity in sorted(numbered, key=lambda item: item[0]):
            if not isinstance(entity, dict):
                skipped.append(SkippedEntity(action, index, None, "not an entity"))
                continue
            # Companies are filed under contacts[...] too; only `type` tells them apart.
            # Deletes may omit the type: then it is a contact (we subscribe to contacts).
            if str(entity.get("type", "contact")).strip().lower() != "contact":
                ignored += 1
                continue
            try:
                events.append(_event(action, entity, f"contacts[{action}][{index}]"))
            except WebhookParseError as exc:
                contact_id = parse_id(entity.get("id"))
                skipped.append(SkippedEntity(action, index, contact_id, str(exc)))
    return ParsedWebhook(
        account_id=account_id,
        subdomain=subdomain,
        events=events,
        ignored=ignored,
        skipped=skipped,
    )
