"""In-memory Unisender accounts (one per API key) and the API methods that act on them."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.unisender.forms import as_list, split_ids

IMPORT_ROW_LIMIT = 500
ROLE_LOCAL_PARTS = frozenset(
    {
        "info",
        "sales",
        "no-reply",
        "noreply",
        "all",
        "admin",
        "support",
        "office",
        "postmaster",
        "abuse",
        "webmaster",
    }
)
SYSTEM_COLUMNS = frozenset(
    {
        "email",
        "phone",
        "tags",
        "delete",
        "email_status",
        "email_availability",
        "email_list_ids",
        "email_subscribe_times",
        "email_unsubscribed_list_ids",
        "email_excluded_list_ids",
        "phone_status",
        "phone_availability",
        "phone_list_ids",
        "phone_subscribe_times",
        "phone_unsubscribed_list_ids",
        "phone_excluded_list_ids",
    }
)
FIELD_TYPES = frozenset({"string", "text", "number", "date", "bool"})
IMPORTABLE_STATUSES = frozenset({"new", "active", "inactive", "unsubscribed"})
# Docs: the status of an existing address can only be changed while it is active/inactive, so
# unsubscribed, blocked, invited... contacts cannot be re-activated by import.
CHANGEABLE_STATUSES = frozenset({"active", "inactive"})
OPTED_OUT = frozenset({"unsubscribed", "blocked"})
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ApiError(Exception):
    """An API-level failure, answered as the `{"error", "code"}` envelope on HTTP 200."""

    def __init__(self, message: str, code: str = "unspecified", *, empty_result: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.empty_result = empty_result

    def envelope(self) -> dict[str, Any]:
        """The JSON body Unisender sends for this error."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.empty_result:
            body["result"] = ""  # documented for exclude/unsubscribe not-found
        return body


def now_text() -> str:
    """UTC in Unisender's `YYYY-MM-DD hh:mm:ss`."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Membership:
    status: str
    added_at: str


@dataclass
class Contact:
    id: int
    email: str
    status: str = "new"
    availability: str = "available"
    added_at: str = field(default_factory=now_text)
    fields: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    lists: dict[int, Membership] = field(default_factory=dict)
    phone: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "status": self.status,
            "availability": self.availability,
            "added_at": self.added_at,
            "phone": self.phone,
            "fields": dict(self.fields),
            "tags": list(self.tags),
            "lists": [
                {"id": lid, "status": m.status, "added_at": m.added_at}
                for lid, m in sorted(self.lists.items())
            ],
        }


@dataclass
class Account:
    api_key: str
    lists: dict[int, dict[str, Any]] = field(default_factory=dict)
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    call_counts: Counter[str] = field(default_factory=Counter)
    call_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20000))
    recent_calls: deque[float] = field(default_factory=deque)

    def field_names(self) -> set[str]:
        return {f["name"] for f in self.fields.values()}

    def require_list(self, list_id: int) -> dict[str, Any]:
        found = self.lists.get(list_id)
        if found is None:
            raise ApiError(f'List with id "{list_id}" not found', "invalid_arg")
        return found

    def to_json(self) -> dict[str, Any]:
        members = Counter(lid for c in self.contacts.values() for lid in c.lists)
        return {
            "api_key": self.api_key,
            "lists": [{**lst, "members": members[lid]} for lid, lst in sorted(self.lists.items())],
            "fields": [dict(f) for _, f in sorted(self.fields.items())],
            "contacts": [c.to_json() for c in self.contacts.values()],
            "call_counts": dict(self.call_counts),
        }


@dataclass
class Fault:
    id: int
    kind: str  # outage | hang | retry_later | latency | non_json | error
    method: str | None = None
    api_key: str | None = None
    remaining: int | None = None  # None: until cleared
    status: int = 503
    seconds: float = 5.0
    code: str = "unspecified"
    message: str = ""

    def matches(self, method: str, api_key: str | None) -> bool:
        return (self.method in (None, method)) and (self.api_key in (None, api_key))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


FAULT_KINDS = frozenset({"outage", "hang", "retry_later", "latency", "non_json", "error"})


@dataclass
class SandboxConfig:
    """Emulator knobs; `from_env` reads the SANDBOX_UNISENDER_* variables."""

    rate_limit_per_min: int = 1200
    latency_ms: int = 0
    keys: tuple[str, ...] = ()
    legacy_contact_shape: bool = False  # getContact with lists/fields nested inside `email`
    string_numbers: bool = False  # counters and log indexes as strings, as some clients see
    default_fields: tuple[str, ...] = ("Name",)  # a fresh Unisender account has a Name field

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxConfig:
        keys = tuple(k.strip() for k in environ.get("SANDBOX_UNISENDER_KEYS", "").split(",") if k)
        return cls(
            rate_limit_per_min=int(environ.get("SANDBOX_UNISENDER_RATE_LIMIT_PER_MIN", "1200")),
            latency_ms=int(environ.get("SANDBOX_UNISENDER_LATENCY_MS", "0")),
            keys=tuple(k for k in keys if k),
        )


Method = Callable[[Account, dict[str, Any]], Any]


class Sandbox:
    """All emulated accounts, faults and settings; every mutation holds one lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.initial = config
        self.config = SandboxConfig(**config.__dict__)
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.faults: list[Fault] = []
        self._ids = 1000
        self.methods: dict[str, Method] = {
            "getLists": self.get_lists,
            "createList": self.create_list,
            "updateList": self.update_list,
            "deleteList": self.delete_list,
            "getFields": self.get_fields,
            "createField": self.create_field,
            "importContacts": self.import_contacts,
            "exclude": self.exclude,
            "unsubscribe": self.unsubscribe,
            "subscribe": self.subscribe,
            "getContact": self.get_contact,
            "isContactInLists": self.is_contact_in_lists,
        }
        self.reset()

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def reset(self) -> None:
        with self.lock:
            self.config = SandboxConfig(**self.initial.__dict__)
            self.accounts.clear()
            self.faults.clear()
            for key in self.config.keys:
                self.create_account(key)

    def create_account(
        self, api_key: str | None = None, seed: Mapping[str, Any] | None = None
    ) -> Account:
        seed = seed or {}
        with self.lock:
            key = api_key or secrets.token_hex(16)
            if key in self.accounts:
                raise ValueError(f"key {key!r} exists")
            account = Account(api_key=key)
            field_specs = seed.get("fields")
            if field_specs is None:
                field_specs = [{"name": n} for n in self.config.default_fields]
            for spec in field_specs:
                spec = {"name": spec} if isinstance(spec, str) else spec
                self.create_field(
                    account, {"name": spec["name"], "type": spec.get("type", "string")}
                )
            for spec in seed.get("lists", []):
                title = spec if isinstance(spec, str) else spec["title"]
                self.create_list(account, {"title": title})
            by_title = {lst["title"]: lid for lid, lst in account.lists.items()}
            for spec in seed.get("contacts", []):
                email = str(spec["email"]).strip().lower()
                contact = Contact(id=self.next_id(), email=email, status=spec.get("status", "new"))
                contact.fields.update({k: str(v) for k, v in spec.get("fields", {}).items()})
                for ref in spec.get("lists", []):
                    lid = by_title[ref] if isinstance(ref, str) else int(ref)
                    account.require_list(lid)
                    status = "unsubscribed" if contact.status in OPTED_OUT else "active"
                    contact.lists[lid] = Membership(status, now_text())
                account.contacts[email] = contact
            self.accounts[key] = account
            return account

    def check_rate_limit(self, account: Account) -> None:
        """Sliding 60 s window per key; rejected calls are not counted."""
        now = time.monotonic()
        window = account.recent_calls
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.config.rate_limit_per_min:
            raise ApiError(
                "API call limit exceeded for this API key", "api_call_limit_exceeded_for_api_key"
            )
        window.append(now)

    def number(self, value: int) -> int | str:
        return str(value) if self.config.string_numbers else value

    def get_lists(self, account: Account, args: dict[str, Any]) -> Any:
        return [
            {"id": self.number(lid), "title": lst["title"]} for lid, lst in account.lists.items()
        ]

    def create_list(self, account: Account, args: dict[str, Any]) -> Any:
        title = str(args.get("title") or "")
        if not title.strip():
            raise ApiError('Required argument "title" is missing', "invalid_arg")
        if any(lst["title"] == title for lst in account.lists.values()):
            # Docs: a duplicate title "returns an error"; the exact code is [unverified].
            raise ApiError(f'List with title "{title}" already exists', "unspecified")
        lid = self.next_id()
        account.lists[lid] = {
            "id": lid,
            "title": title,
            "before_subscribe_url": args.get("before_subscribe_url") or "",
            "after_subscribe_url": args.get("after_subscribe_url") or "",
        }
        return {"id": self.number(lid)}

    def _list_id_arg(self, args: dict[str, Any]) -> int:
        try:
            return int(str(args.get("list_id", "")).strip())
        except ValueError:
            raise ApiError(
                'Required argument "list_id" is missing or invalid', "invalid_arg"
            ) from None

    def update_list(self, account: Account, args: dict[str, Any]) -> Any:
        lst = account.require_list(self._list_id_arg(args))
        title = str(args.get("title") or "")
        if not title.strip():
            # Clients disagree whether title is required; requiring it catches those that omit it.
            raise ApiError('Required argument "title" is missing', "invalid_arg")
        if any(o["title"] == title and o["id"] != lst["id"] for o in account.lists.values()):
            raise ApiError(f'List with title "{title}" already exists', "unspecified")
        lst["title"] = title
        for key in ("before_subscribe_url", "after_subscribe_url"):
            if key in args:
                lst[key] = args[key]
        return {}

    def delete_list(self, account: Account, args: dict[str, Any]) -> Any:
        lid = self._list_id_arg(args)
        account.require_list(lid)
        del account.lists[lid]
        for contact in account.contacts.values():
            contact.lists.pop(lid, None)
        return {}

    def get_fields(self, account: Account, args: dict[str, Any]) -> Any:
        return [
            {**f, "id": self.number(f["id"]), "view_pos": self.number(f["view_pos"])}
            for f in account.fields.values()
        ]

    def create_field(self, account: Account, args: dict[str, Any]) -> Any:
        name = str(args.get("name") or "")
        kind = str(args.get("type") or "")
        if not _FIELD_NAME.match(name):
            raise ApiError(
                f'Field name "{name}" must start with a latin letter and contain only '
                "latin letters, digits and _",
                "invalid_arg",
            )
        if name.lower() in SYSTEM_COLUMNS:
            raise ApiError(f'Field name "{name}" is reserved', "invalid_arg")
        if kind not in FIELD_TYPES:
            raise ApiError(f'Invalid field type "{kind}"', "invalid_arg")
        if name in account.field_names():
            raise ApiError(f'Field "{name}" already exists', "invalid_arg")
        fid = self.next_id()
        account.fields[fid] = {
            "id": fid,
            "name": name,
            "public_name": str(args.get("public_name") or name),
            "type": kind,
            "is_visible": 1,
            "view_pos": len(account.fields) + 1,
        }
        return {"id": self.number(fid)}

    def import_contacts(self, account: Account, args: dict[str, Any]) -> Any:
        names = [str(n) for n in as_list(args.get("field_names"))]
        rows = as_list(args.get("data"))
        if not names:
            raise ApiError('Required argument "field_names" is missing', "invalid_arg")
        if "email" not in names and "phone" not in names:
            raise ApiError("field_names must contain email or phone", "invalid_arg")
        if len(set(names)) != len(names):
            raise ApiError("field_names contains duplicates", "invalid_arg")
        known = account.field_names()
        unknown = [n for n in names if n not in SYSTEM_COLUMNS and n not in known]
        if unknown:
            raise ApiError(f'Unknown field name "{unknown[0]}"', "invalid_arg")
        if not rows:
            raise ApiError('Required argument "data" is missing', "invalid_arg")
        if len(rows) > IMPORT_ROW_LIMIT:
            raise ApiError(
                f"Too many contacts: {len(rows)}, at most {IMPORT_ROW_LIMIT} per call",
                "invalid_arg",
            )
        parsed: list[dict[str, str]] = []
        for raw in rows:
            if not isinstance(raw, dict):
                raise ApiError("data must be a two-dimensional array", "invalid_arg")
            if any(not k.isdigit() or int(k) >= len(names) for k in raw):
                raise ApiError("data row has more values than field_names", "invalid_arg")
            # A missing cell means "not given" (only cells that are present are applied).
            parsed.append({n: str(raw[str(i)]) for i, n in enumerate(names) if str(i) in raw})
        for row in parsed:  # validate every list id before changing anything
            for column in (
                "email_list_ids",
                "email_excluded_list_ids",
                "email_unsubscribed_list_ids",
            ):
                for lid in self._ids_cell(row.get(column)):
                    account.require_list(lid)

        counters = Counter[str]()
        log: list[dict[str, Any]] = []
        options = {
            "overwrite_lists": str(args.get("overwrite_lists", "0")) == "1",
            "overwrite_tags": str(args.get("overwrite_tags", "0")) == "1",
        }
        for index, row in enumerate(parsed):
            try:
                outcome = self._import_row(account, row, **options)
            except RowRejected as exc:
                log.append({"index": self.number(index), "code": exc.code, "message": exc.message})
                if exc.invalid:
                    counters["invalid"] += 1
                continue
            if outcome:
                counters[outcome] += 1
            contact = account.contacts.get(row.get("email", "").strip().lower())
            if contact is not None and outcome != "deleted" and contact.status == "new":
                counters["new_emails"] += 1
        result: dict[str, Any] = {
            name: self.number(counters[name])
            for name in ("inserted", "updated", "deleted", "new_emails", "invalid")
        }
        return {"total": self.number(len(parsed)), **result, "log": log}

    @staticmethod
    def _ids_cell(value: str | None) -> list[int]:
        try:
            return split_ids(value) or []
        except ValueError:
            raise ApiError(f'Invalid list ids "{value}"', "invalid_arg") from None

    def _import_row(
        self, account: Account, row: dict[str, str], *, overwrite_lists: bool, overwrite_tags: bool
    ) -> str | None:
        email = row.get("email", "").strip().lower()
        if not email:
            raise RowRejected("empty_email", "This sandbox imports rows by email only", True)
        if not _EMAIL.match(email):
            raise RowRejected("invalid_email", f'Invalid email "{email}"', True)
        list_ids = self._ids_cell(row.get("email_list_ids")) if "email_list_ids" in row else None
        existing = account.contacts.get(email)
        if row.get("delete", "0").strip() in ("1", "true"):
            if existing is None:
                return None
            if list_ids:
                for lid in list_ids:  # delete scoped to the given lists
                    existing.lists.pop(lid, None)
            else:
                # Ambiguous in the docs (account-wide vs lists-only): the harsher reading.
                del account.contacts[email]
            return "deleted"
        if email.split("@", 1)[0] in ROLE_LOCAL_PARTS:
            raise RowRejected("role_email", f'Role address "{email}" is not imported', True)
        tags = [t.strip() for t in row.get("tags", "").split(",") if t.strip()]
        if len(tags) > 10:
            raise RowRejected("too_many_tags", "At most 10 tags per contact", False)
        wanted = row.get("email_status", "").strip()
        if wanted and wanted not in IMPORTABLE_STATUSES:
            raise RowRejected("invalid_status", f'Invalid email_status "{wanted}"', False)

        contact = existing
        if contact is None:
            contact = Contact(id=self.next_id(), email=email, status=wanted or "new")
            account.contacts[email] = contact
        elif wanted and contact.status in CHANGEABLE_STATUSES:
            contact.status = wanted
        if row.get("email_availability"):
            contact.availability = row["email_availability"]
        if "phone" in row:
            contact.phone = row["phone"] or None
        for name in account.field_names():
            if name in row:
                contact.fields[name] = row[name]  # an empty cell stores "" (clears): [unverified]
        if "tags" in row:
            contact.tags = tags if overwrite_tags else list(dict.fromkeys([*contact.tags, *tags]))

        if list_ids is not None:
            times = [t.strip() for t in row.get("email_subscribe_times", "").split(",")]
            if overwrite_lists:
                for lid in list(contact.lists):
                    if lid not in list_ids:
                        del contact.lists[lid]
            for pos, lid in enumerate(list_ids):
                if lid in contact.lists:
                    continue  # a per-list unsubscribe is never undone by import
                added = times[pos] if pos < len(times) and times[pos] else now_text()
                status = "unsubscribed" if contact.status in OPTED_OUT else "active"
                contact.lists[lid] = Membership(status, added)
        for lid in self._ids_cell(row.get("email_unsubscribed_list_ids")):
            member = contact.lists.setdefault(lid, Membership("unsubscribed", now_text()))
            member.status = "unsubscribed"
        for lid in self._ids_cell(row.get("email_excluded_list_ids")):
            contact.lists.pop(lid, None)
        return "updated" if existing is not None else "inserted"

    def _find_contact(self, account: Account, args: dict[str, Any]) -> tuple[Contact | None, str]:
        kind = str(args.get("contact_type") or "")
        value = str(args.get("contact") or "").strip()
        if kind not in ("email", "phone"):
            raise ApiError('Argument "contact_type" must be email or phone', "invalid_arg")
        if not value:
            raise ApiError('Required argument "contact" is missing', "invalid_arg")
        if kind == "email":
            return account.contacts.get(value.lower()), value
        return next((c for c in account.contacts.values() if c.phone == value), None), value

    def _target_lists(self, account: Account, contact: Contact, args: dict[str, Any]) -> list[int]:
        ids = self._ids_cell(args.get("list_ids")) if args.get("list_ids") else None
        return [
            lid for lid in (ids if ids is not None else list(contact.lists)) if lid in contact.lists
        ]

    def exclude(self, account: Account, args: dict[str, Any]) -> Any:
        contact, value = self._find_contact(account, args)
        targets = self._target_lists(account, contact, args) if contact else []
        if contact is None or not targets:
            raise ApiError(f'Contact "{value}" not found', "unspecified", empty_result=True)
        for lid in targets:
            del contact.lists[lid]  # removed, not unsubscribed: it may be added again later
        return {}

    def unsubscribe(self, account: Account, args: dict[str, Any]) -> Any:
        contact, value = self._find_contact(account, args)
        targets = self._target_lists(account, contact, args) if contact else []
        if contact is None or not targets:
            raise ApiError(f'Contact "{value}" not found', "unspecified", empty_result=True)
        for lid in targets:
            contact.lists[lid].status = "unsubscribed"  # account-level status is unchanged
        return {}

    def subscribe(self, account: Account, args: dict[str, Any]) -> Any:
        list_ids = self._ids_cell(args.get("list_ids"))
        if not list_ids:
            raise ApiError('Required argument "list_ids" is missing', "invalid_arg")
        for lid in list_ids:
            account.require_list(lid)
        fields = args.get("fields")
        if not isinstance(fields, dict) or not (fields.get("email") or fields.get("phone")):
            raise ApiError("fields[email] or fields[phone] is required", "invalid_arg")
        email = str(fields.get("email") or "").strip().lower()
        if not email or not _EMAIL.match(email):
            raise ApiError(f'Invalid email "{email}"', "invalid_arg")
        known = account.field_names()
        unknown = [n for n in fields if n not in ("email", "phone") and n not in known]
        if unknown:
            raise ApiError(f'Unknown field name "{unknown[0]}"', "invalid_arg")
        contact = account.contacts.get(email)
        optin = str(args.get("double_optin", "0"))
        ready = contact is not None and contact.status in ("new", "active")
        if optin != "3" and not (optin == "4" and ready):
            # Sandbox lists have no confirmation letters, so every opt-in email fails like this.
            ids = ",".join(str(i) for i in list_ids)
            raise ApiError(f'These list ids="{ids}" has no confirmation letters', "unspecified")
        if contact is None:
            contact = Contact(id=self.next_id(), email=email)
            account.contacts[email] = contact
        overwrite = str(args.get("overwrite", "0"))
        values = {n: str(v) for n, v in fields.items() if n in known}
        if overwrite == "1":
            contact.fields = values
            for lid in list(contact.lists):
                if lid not in list_ids:
                    del contact.lists[lid]
        elif overwrite == "2":
            contact.fields.update(values)
        else:
            for name, value in values.items():
                contact.fields.setdefault(name, value)
        if fields.get("phone"):
            contact.phone = str(fields["phone"])
        tags = [t.strip() for t in str(args.get("tags") or "").split(",") if t.strip()]
        if tags:
            contact.tags = tags if overwrite in ("1", "2") else [*contact.tags, *tags][:10]
        for lid in list_ids:
            # double_optin=3 on an opted-out contact is [unverified]: it stays opted out.
            status = "unsubscribed" if contact.status in OPTED_OUT else "active"
            contact.lists.setdefault(lid, Membership(status, now_text()))
        return {"person_id": self.number(contact.id)}

    def get_contact(self, account: Account, args: dict[str, Any]) -> Any:
        email = str(args.get("email") or "").strip().lower()
        if not email:
            raise ApiError('Required argument "email" is missing', "invalid_arg")
        contact = account.contacts.get(email)
        if contact is None:
            # [unverified]: the real answer for an unknown address is undocumented.
            raise ApiError(f'Contact "{email}" not found', "unspecified")

        def flag(name: str) -> bool:
            return str(args.get(name, "0")) == "1"

        details: dict[str, Any] = {
            "email": contact.email,
            "added_at": contact.added_at,
            "status": contact.status,
            "availability": contact.availability,
        }
        if flag("include_details"):
            details.update(
                last_send_datetime=None,
                last_delivery_datetime=None,
                last_read_datetime=None,
                last_click_datetime=None,
                rating=None,
            )
        extra: dict[str, Any] = {}
        if flag("include_lists"):
            extra["lists"] = [
                {"id": self.number(lid), "status": m.status, "added_at": m.added_at}
                for lid, m in sorted(contact.lists.items())
            ]
        if flag("include_fields"):
            extra["fields"] = {n: contact.fields.get(n) for n in sorted(account.field_names())}
        if self.config.legacy_contact_shape:
            return {"email": {**details, **extra}}
        return {"email": details, **extra}

    def is_contact_in_lists(self, account: Account, args: dict[str, Any]) -> Any:
        email = str(args.get("email") or "").strip().lower()
        list_ids = self._ids_cell(args.get("list_ids"))
        condition = str(args.get("condition") or "or")
        if not email or not list_ids:
            raise ApiError("email and list_ids are required", "invalid_arg")
        if condition not in ("or", "and"):
            raise ApiError('condition must be "or" or "and"', "invalid_arg")
        contact = account.contacts.get(email)
        member = [
            contact is not None
            and lid in contact.lists
            and contact.lists[lid].status != "unsubscribed"
            for lid in list_ids
        ]
        return all(member) if condition == "and" else any(member)

    def opt_out(self, account: Account, email: str, list_ids: list[int] | None) -> Contact:
        """A person unsubscribing: from the given lists, or from everything."""
        contact = account.contacts.get(email.strip().lower())
        if contact is None:
            raise KeyError(email)
        if list_ids:
            for lid in list_ids:
                account.require_list(lid)
                contact.lists.setdefault(lid, Membership("unsubscribed", now_text()))
                contact.lists[lid].status = "unsubscribed"
        else:
            contact.status = "unsubscribed"
            for member in contact.lists.values():
                member.status = "unsubscribed"
        return contact


class RowRejected(Exception):
    """One importContacts row refused; it lands in `log` and the rest goes through."""

    def __init__(self, code: str, message: str, invalid: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.invalid = invalid
