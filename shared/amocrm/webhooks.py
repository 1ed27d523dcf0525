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
from urllib.parse import unquote

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


def split_pairs(text: str) -> list[tuple[str, str]]:
    """The pairs of a form body, as parse_qsl gives them with our options.

    Those options: `keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PAIRS`.
    The same pairs and the same ValueErrors (a property test holds it to parse_qsl), about 5x
    faster on webhook bodies: parse_qsl percent-decodes every `%5B…%5D` key through a regex split,
    which cost more than the rest of the request. Keys are decoded once per process (`_KEYS`).
    """
    if not text:
        return []
    if text.count("&") + 1 > MAX_PAIRS:
        raise ValueError("Max number of fields exceeded")
    pairs: list[tuple[str, str]] = []
    append = pairs.append
    keys = _KEYS
    for name_value in text.split("&"):
        name, sep, value = name_value.partition("=")
        if not sep:
            raise ValueError(f"bad query field: {name_value!r}")
        key = keys.get(name)
        if key is None:
            key = _unquote_plus(name)
            if len(name) <= _KEY_CACHE_LENGTH:
                if len(keys) >= _KEY_CACHE_SIZE:
                    keys.clear()
                keys[name] = key
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            # Mostly an email's `%40`: when that is the only escape, `@` is what unquote gives.
            at = value.replace("%40", "@")
            value = at if "%" not in at else unquote(value)
        append((key, value))
    return pairs


def _unquote_plus(text: str) -> str:
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    # Only escaped brackets (the common key): plain replacements give what unquote would.
    replaced = text.replace("%5B", "[").replace("%5D", "]").replace("%5b", "[").replace("%5d", "]")
    return replaced if "%" not in replaced else unquote(text)


# Raw key → decoded key, and decoded key → its path: amoCRM bodies repeat the same few dozen keys
# in every POST. Bounded (cleared when full, long keys never kept) so hostile keys cost no memory.
_KEY_CACHE_SIZE = 4096
_KEY_CACHE_LENGTH = 160
_KEYS: dict[str, str] = {}
_PATHS: dict[str, tuple[tuple[str, ...], str]] = {}


def _key_path(key: str) -> tuple[tuple[str, ...], str]:
    """`a[b][c]` → (("a", "b"), "c"): the groups that hold the value, and its name."""
    path = _PATHS.get(key)
    if path is None:
        match = _KEY.match(key)
        if match is None:
            raise WebhookParseError(f"malformed key {key[:80]!r}")
        parts = (match.group(1), *_SEGMENT.findall(match.group(2)))
        path = (parts[:-1], parts[-1])
        if len(key) <= _KEY_CACHE_LENGTH:
            if len(_PATHS) >= _KEY_CACHE_SIZE:
                _PATHS.clear()
            _PATHS[key] = path
    return path


def _next_index(node: Tree) -> str:
    """The name `x[]` appends under: how many numbered entries the group holds."""
    return str(sum(1 for k in node if parse_id(k) is not None))


def _descend(tree: Tree, parents: tuple[str, ...], key: str) -> Tree:
    node = tree
    for part in parents:
        if part == "":
            part = _next_index(node)
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise WebhookParseError(f"key {key[:80]!r} is both a value and a group")
        node = child
    return node


def parse_form(body: bytes | str) -> Tree:
    """Decode an x-www-form-urlencoded body with PHP-style bracketed keys into nested dicts."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        pairs = split_pairs(text)
    except ValueError as exc:
        raise WebhookParseError(f"not a form-encoded body: {exc}") from exc
    tree: Tree = {}
    # A group, once created, is never replaced (a value cannot overwrite it): the group of a
    # path without `[]` can be remembered for the following keys of the same entity.
    groups: dict[tuple[str, ...], Tree] = {(): tree}
    for key, value in pairs:
        parents, leaf = _key_path(key)
        node = groups.get(parents)
        if node is None:
            node = _descend(tree, parents, key)
            if "" not in parents:
                groups[parents] = node
        if leaf == "":
            leaf = _next_index(node)
        if isinstance(node.get(leaf), dict):
            raise WebhookParseError(f"key {key[:80]!r} is both a value and a group")
        node[leaf] = value
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
    too_big = event_json_bound(event) > MAX_EVENT_BYTES  # serialized only when it may be
    if too_big and len(event.model_dump_json()) > MAX_EVENT_BYTES:
        raise WebhookParseError(f"{where} is too large for one event")
    return event


# JSON of a ContactEvent without its strings (keys, punctuation, 19-digit ints, nulls) and of
# one EmailValue without its strings; each string character takes at most 6 (`\u001f`).
_EVENT_JSON_FIXED = 160
_EMAIL_JSON_FIXED = 80


def event_json_bound(event: ContactEvent) -> int:
    """An upper bound of `len(event.model_dump_json())`, without serializing the event."""
    size = _EVENT_JSON_FIXED + 6 * len(event.name)
    for email in event.emails or ():
        size += _EMAIL_JSON_FIXED + 6 * (len(email.value) + len(email.enum_code or ""))
    return size


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
