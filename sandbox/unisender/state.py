"""In-memory Unisender accounts (one per API key) and the API methods that act on them."""

from __future__ import annotations

import csv
import functools
import io
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.unisender.forms import as_list, split_ids
from sandbox.unisender.hooks import (
    EVENT_FORMATS,
    HOOK_EVENTS,
    HOOK_STATUSES,
    Delivery,
    Hook,
    Timer,
    post_json,
)
from sandbox.unisender.limits import METHOD_LIMITS, LimitHit, Windows
from sandbox.unisender.messages import DEFAULT_LANGUAGE, render

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
    """An API-level failure, answered as the `{"error", "code"}` envelope on HTTP 200.

    `key` names a text in `messages.CATALOG`; the text is rendered in the request's language.
    """

    def __init__(
        self,
        key: str,
        code: str = "unspecified",
        *,
        empty_result: bool = False,
        **params: Any,
    ) -> None:
        super().__init__(render(key, DEFAULT_LANGUAGE, params))
        self.key = key
        self.params = params
        self.code = code
        self.empty_result = empty_result

    @property
    def message(self) -> str:
        return render(self.key, DEFAULT_LANGUAGE, self.params)

    def envelope(self, lang: str = DEFAULT_LANGUAGE) -> dict[str, Any]:
        """The JSON body Unisender sends for this error, its text in `lang`."""
        body: dict[str, Any] = {"error": render(self.key, lang, self.params), "code": self.code}
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
    # Lists this person unsubscribed from. Kept even when the membership row goes (exclude,
    # overwrite_lists, a scoped delete), so putting the list back can never re-activate it:
    # "It is impossible to restore the «active» status through API" (docs, unsubscribe).
    unsubscribed_lists: set[int] = field(default_factory=set)

    def unsubscribe_from(self, list_id: int) -> None:
        member = self.lists.setdefault(list_id, Membership("unsubscribed", now_text()))
        member.status = "unsubscribed"
        self.unsubscribed_lists.add(list_id)

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
            "unsubscribed_lists": sorted(self.unsubscribed_lists),
        }


@dataclass
class OptOut:
    """What an account keeps of a deleted contact's opt-outs ([unverified]: the docs say only
    that the API cannot restore `active`; deleting and re-importing would be such a way)."""

    status: str | None
    lists: set[int]


@dataclass
class ExportTask:
    uuid: str
    api_key: str
    field_names: list[str]
    rows: list[list[str]]
    notify_url: str
    base_url: str
    status: str = "new"  # new -> processing -> completed
    created_at: str = field(default_factory=now_text)

    @property
    def file_url(self) -> str:
        return f"{self.base_url}files/export/{self.uuid}.csv"

    def result(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task_uuid": self.uuid, "status": self.status}
        if self.status == "completed":
            body["file_to_download"] = self.file_url
        return body


@dataclass
class Account:
    api_key: str
    login: str = ""
    lists: dict[int, dict[str, Any]] = field(default_factory=dict)
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    call_counts: Counter[str] = field(default_factory=Counter)
    call_log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20000))
    hooks: dict[str, Hook] = field(default_factory=dict)
    opt_outs: dict[str, OptOut] = field(default_factory=dict)
    tasks: dict[str, ExportTask] = field(default_factory=dict)
    # Every time a call tried to put an opted-out address (back) on a list or to re-activate it:
    # what a sync that "never re-subscribes" must keep at zero (issue 12, item 5).
    resubscribe_attempts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10000))

    def field_names(self) -> set[str]:
        return {f["name"] for f in self.fields.values()}

    def require_list(self, list_id: int) -> dict[str, Any]:
        found = self.lists.get(list_id)
        if found is None:
            raise ApiError("list_not_found", "invalid_arg", list_id=list_id)
        return found

    def to_json(self) -> dict[str, Any]:
        members = Counter(lid for c in self.contacts.values() for lid in c.lists)
        return {
            "api_key": self.api_key,
            "login": self.login,
            "lists": [{**lst, "members": members[lid]} for lid, lst in sorted(self.lists.items())],
            "fields": [dict(f) for _, f in sorted(self.fields.items())],
            "contacts": [c.to_json() for c in self.contacts.values()],
            "call_counts": dict(self.call_counts),
            "hooks": [h.to_json() for h in self.hooks.values()],
            "resubscribe_attempts": list(self.resubscribe_attempts),
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
# What a person can do to an address "in Unisender" (control API `simulate`), and the hook event
# each sends. Delivery statuses follow getCampaignDeliveryStats' `send_result` names [unverified].
SIMULATED_EVENTS = {
    "unsubscribe": ("subscribe_status", "unsubscribed"),
    "subscribe": ("subscribe_status", "subscribed"),
    "hard_bounce": ("email_status", "err_user_unknown"),
    "soft_bounce": ("email_status", "err_mailbox_full"),
    "complaint": ("email_status", "ok_fbl"),
    "delivered": ("email_status", "ok_delivered"),
}
EXPORT_PAGE_LIMIT = 1000  # legacy exportContacts: "not more than 1000 records at a time"


def _env_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class SandboxConfig:
    """Emulator knobs; `from_env` reads the SANDBOX_UNISENDER_* variables."""

    rate_limit_per_min: int = 1200  # per API key (docs); 0 = off
    ip_rate_limit_per_min: int = 1200  # per client IP (docs), across all keys; 0 = off
    rate_window_seconds: float = 60.0
    method_limits: bool = True  # subscribe 300, async/exportContacts 20 per window (docs)
    latency_ms: int = 0
    keys: tuple[str, ...] = ()
    legacy_contact_shape: bool = False  # getContact with lists/fields nested inside `email`
    string_numbers: bool = False  # counters and log indexes as strings, as some clients see
    default_fields: tuple[str, ...] = ("Name",)  # a fresh Unisender account has a Name field
    hook_timeout_seconds: float = 3.0  # docs: answer 200 within 3 s
    hook_retry_interval_seconds: float = 600.0  # docs: every 10 minutes ...
    hook_retry_period_seconds: float = 86400.0  # ... for 24 hours, then the hook is `stopped`
    # listHooks / removeHook are [unverified] names: off, they answer `unknown_method`, so a
    # client can be tested on falling back to `setHook status=disabled`.
    hook_admin_methods: bool = True
    export_task_seconds: float = 1.0  # how long an async export takes to complete
    # Callers behind one NAT (containers of a compose stack) reach the emulator from different
    # addresses but the real service from one egress IP: true counts every caller as that one IP.
    one_egress_ip: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxConfig:
        keys = tuple(k.strip() for k in environ.get("SANDBOX_UNISENDER_KEYS", "").split(",") if k)
        prefix = "SANDBOX_UNISENDER_"
        numbers: dict[str, Any] = {}
        for name, kind in (
            ("rate_limit_per_min", int),
            ("ip_rate_limit_per_min", int),
            ("rate_window_seconds", float),
            ("latency_ms", int),
            ("hook_timeout_seconds", float),
            ("hook_retry_interval_seconds", float),
            ("hook_retry_period_seconds", float),
            ("export_task_seconds", float),
        ):
            raw = environ.get(prefix + name.upper())
            if raw:
                numbers[name] = kind(raw)
        flags: dict[str, Any] = {
            name: _env_bool(environ[prefix + name.upper()])
            for name in ("method_limits", "hook_admin_methods", "one_egress_ip")
            if environ.get(prefix + name.upper())
        }
        return cls(keys=tuple(k for k in keys if k), **numbers, **flags)


Method = Callable[[Account, dict[str, Any]], Any]
RUNTIME_SETTINGS = frozenset(
    {
        "rate_limit_per_min",
        "ip_rate_limit_per_min",
        "rate_window_seconds",
        "method_limits",
        "latency_ms",
        "legacy_contact_shape",
        "string_numbers",
        "hook_timeout_seconds",
        "hook_retry_interval_seconds",
        "hook_retry_period_seconds",
        "hook_admin_methods",
        "export_task_seconds",
        "one_egress_ip",
    }
)


class Sandbox:
    """All emulated accounts, faults and settings; every mutation holds one lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.initial = config
        self.config = SandboxConfig(**config.__dict__)
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.faults: list[Fault] = []
        self.windows = Windows()
        self.timer = Timer()
        self.deliveries: deque[Delivery] = deque(maxlen=5000)  # the log the control API shows
        # Deliveries still being tried, by id: apart from the bounded log, so a burst of events
        # (10,000 unsubscribes with single_event=1) is never evicted before it is delivered.
        self.pending: dict[int, Delivery] = {}
        self.generation = 0  # bumped by reset: background work of an older one stands down
        # The call being served (set by the app under the lock, before the handler runs): its
        # language for warning texts, its method for the resubscribe-attempt record.
        self.lang = DEFAULT_LANGUAGE
        self.current_method = ""
        self._ids = 1000
        self.methods: dict[str, Method] = {
            "getLists": self.get_lists,
            "createList": self.create_list,
            "updateList": self.update_list,
            "deleteList": self.delete_list,
            "getFields": self.get_fields,
            "createField": self.create_field,
            "importContacts": self.import_contacts,
            "exportContacts": self.export_contacts,
            "async/exportContacts": self.export_contacts_async,
            "async/getTaskResult": self.get_task_result,
            "exclude": self.exclude,
            "unsubscribe": self.unsubscribe,
            "subscribe": self.subscribe,
            "getContact": self.get_contact,
            "isContactInLists": self.is_contact_in_lists,
            "setHook": self.set_hook,
            "listHooks": self.list_hooks,
            "removeHook": self.remove_hook,
        }
        self.reset()

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.timer.clear()
            self.config = SandboxConfig(**self.initial.__dict__)
            self.accounts.clear()
            self.faults.clear()
            self.windows.clear()
            self.deliveries.clear()
            self.pending.clear()
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
            # The login goes into hook bodies; it must never be (part of) the key.
            account = Account(api_key=key, login=str(seed.get("login") or f"user{self.next_id()}"))
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
                    contact.lists[lid] = Membership("active", now_text())
                    if contact.status in OPTED_OUT:
                        contact.unsubscribe_from(lid)
                for ref in spec.get("unsubscribed_lists", []):
                    lid = by_title[ref] if isinstance(ref, str) else int(ref)
                    account.require_list(lid)
                    contact.unsubscribe_from(lid)
                account.contacts[email] = contact
            self.accounts[key] = account
            return account

    # --- limits -------------------------------------------------------------------------------

    def admit(self, api_key: str | None, ip: str, method: str) -> None:
        """Count one API call against the IP (always) and the key (when it is valid)."""
        cfg = self.config
        if cfg.one_egress_ip:
            ip = "egress"
        per_method = METHOD_LIMITS.get(method) if cfg.method_limits else None
        checks: list[tuple[str, str, str | None, int]] = [
            ("ip", ip, None, cfg.ip_rate_limit_per_min)
        ]
        if per_method:
            checks.append(("ip", ip, method, per_method))
        if api_key is not None:
            checks.append(("api_key", api_key, None, cfg.rate_limit_per_min))
            if per_method:
                checks.append(("api_key", api_key, method, per_method))
        hit = self.windows.admit(checks, cfg.rate_window_seconds)
        if hit is not None:
            raise _limit_error(hit)

    def number(self, value: int) -> int | str:
        return str(value) if self.config.string_numbers else value

    # --- lists and fields ---------------------------------------------------------------------

    def get_lists(self, account: Account, args: dict[str, Any]) -> Any:
        return [
            {"id": self.number(lid), "title": lst["title"]} for lid, lst in account.lists.items()
        ]

    def create_list(self, account: Account, args: dict[str, Any]) -> Any:
        title = str(args.get("title") or "")
        if not title.strip():
            raise ApiError("missing_arg", "invalid_arg", name="title")
        if any(lst["title"] == title for lst in account.lists.values()):
            # Docs: a duplicate title "returns an error"; the exact code is [unverified].
            raise ApiError("list_exists", "unspecified", title=title)
        lid = self.next_id()
        account.lists[lid] = {
            "id": lid,
            "title": title,
            "before_subscribe_url": args.get("before_subscribe_url") or "",
            "after_subscribe_url": args.get("after_subscribe_url") or "",
        }
        return {"id": self.number(lid)}

    def _list_id_arg(self, args: dict[str, Any], name: str = "list_id") -> int:
        try:
            return int(str(args.get(name, "")).strip())
        except ValueError:
            raise ApiError("missing_arg", "invalid_arg", name=name) from None

    def update_list(self, account: Account, args: dict[str, Any]) -> Any:
        lst = account.require_list(self._list_id_arg(args))
        title = str(args.get("title") or "")
        if not title.strip():
            # Clients disagree whether title is required; requiring it catches those that omit it.
            raise ApiError("missing_arg", "invalid_arg", name="title")
        if any(o["title"] == title and o["id"] != lst["id"] for o in account.lists.values()):
            raise ApiError("list_exists", "unspecified", title=title)
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
            contact.unsubscribed_lists.discard(lid)
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
            raise ApiError("field_name_bad", "invalid_arg", name=name)
        if name.lower() in SYSTEM_COLUMNS:
            raise ApiError("field_reserved", "invalid_arg", name=name)
        if kind not in FIELD_TYPES:
            raise ApiError("field_type_bad", "invalid_arg", type=kind)
        if name in account.field_names():
            raise ApiError("field_exists", "invalid_arg", name=name)
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

    # --- importContacts -----------------------------------------------------------------------

    def import_contacts(self, account: Account, args: dict[str, Any]) -> Any:
        names = [str(n) for n in as_list(args.get("field_names"))]
        rows = as_list(args.get("data"))
        if not names:
            raise ApiError("missing_arg", "invalid_arg", name="field_names")
        if "email" not in names and "phone" not in names:
            raise ApiError("email_or_phone_column", "invalid_arg")
        if len(set(names)) != len(names):
            raise ApiError("duplicate_columns", "invalid_arg")
        known = account.field_names()
        unknown = [n for n in names if n not in SYSTEM_COLUMNS and n not in known]
        if unknown:
            raise ApiError("unknown_field", "invalid_arg", name=unknown[0])
        if not rows:
            raise ApiError("missing_arg", "invalid_arg", name="data")
        if len(rows) > IMPORT_ROW_LIMIT:
            raise ApiError("too_many_rows", "invalid_arg", rows=len(rows), limit=IMPORT_ROW_LIMIT)
        parsed: list[dict[str, str]] = []
        for raw in rows:
            if not isinstance(raw, dict):
                raise ApiError("data_not_2d", "invalid_arg")
            if any(not k.isdigit() or int(k) >= len(names) for k in raw):
                raise ApiError("row_too_long", "invalid_arg")
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
            warnings: list[tuple[str, str, dict[str, Any]]] = []
            try:
                outcome = self._import_row(account, row, warnings, **options)
            except RowRejected as exc:
                log.append(
                    {
                        "index": self.number(index),
                        "code": exc.code,
                        "message": exc.key_text(self.lang),
                    }
                )
                if exc.invalid:
                    counters["invalid"] += 1
                continue
            # Warnings sit in the same `log` as errors ([doc]: "per-row errors/warnings"), but
            # their row IS imported and counted in inserted/updated; only `invalid` rows failed.
            for code, key, params in warnings:
                log.append(
                    {
                        "index": self.number(index),
                        "code": code,
                        "message": render(key, self.lang, params),
                    }
                )
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
            raise ApiError("invalid_list_ids", "invalid_arg", value=value) from None

    def _attempted(self, account: Account, email: str, list_id: int | None, why: str) -> None:
        account.resubscribe_attempts.append(
            {
                "time": now_text(),
                "method": self.current_method,
                "email": email,
                "list_id": list_id,
                "why": why,
            }
        )

    def _contact_for(self, account: Account, email: str, status: str) -> Contact:
        """A new contact; an address deleted after opting out comes back opted out."""
        contact = Contact(id=self.next_id(), email=email, status=status)
        remembered = account.opt_outs.pop(email, None)
        if remembered is not None:
            if remembered.status is not None:
                contact.status = remembered.status
            contact.unsubscribed_lists = set(remembered.lists)
        account.contacts[email] = contact
        return contact

    def _forget(self, account: Account, contact: Contact) -> None:
        del account.contacts[contact.email]
        opted_out = contact.status if contact.status in OPTED_OUT else None
        if opted_out or contact.unsubscribed_lists:
            account.opt_outs[contact.email] = OptOut(opted_out, set(contact.unsubscribed_lists))

    def _join(
        self,
        account: Account,
        contact: Contact,
        list_id: int,
        added_at: str,
        warnings: list[tuple[str, str, dict[str, Any]]] | None = None,
        *,
        report: bool = True,
    ) -> None:
        """Put `contact` on a list; never re-activates an opt-out (per list or account-wide).

        `report=False`: the caller itself asks for the address as unsubscribed, so joining the
        list as unsubscribed is what it wants, not an attempt to re-activate anyone.
        """
        member = contact.lists.get(list_id)
        blocked = list_id in contact.unsubscribed_lists or contact.status in OPTED_OUT
        if blocked:
            if report:
                self._attempted(account, contact.email, list_id, "unsubscribed")
            if warnings is not None and report:
                params = {"email": contact.email, "list_ids": list_id}
                warnings.append(("list_unsubscribed", "warn_list_unsubscribed", params))
            if member is None:
                contact.lists[list_id] = Membership("unsubscribed", added_at)
            contact.unsubscribe_from(list_id)
            return
        if member is None:
            contact.lists[list_id] = Membership("active", added_at)

    def _import_row(
        self,
        account: Account,
        row: dict[str, str],
        warnings: list[tuple[str, str, dict[str, Any]]],
        *,
        overwrite_lists: bool,
        overwrite_tags: bool,
    ) -> str | None:
        email = row.get("email", "").strip().lower()
        if not email:
            raise RowRejected("empty_email", "row_no_email", True)
        if not _EMAIL.match(email):
            raise RowRejected("invalid_email", "invalid_email", True, email=email)
        list_ids = self._ids_cell(row.get("email_list_ids")) if "email_list_ids" in row else None
        existing = account.contacts.get(email)
        if row.get("delete", "0").strip() in ("1", "true"):
            # Docs: "the specified contacts of the list are deleted"; account-wide vs lists-only
            # is ambiguous. With `email_list_ids` in the row the delete is scoped to those lists;
            # without, the harsher reading: the contact leaves the account. Either way an opt-out
            # survives (see `_forget`).
            if existing is None:
                return None
            if list_ids:
                removed = [lid for lid in list_ids if existing.lists.pop(lid, None) is not None]
                return "deleted" if removed else None
            self._forget(account, existing)
            return "deleted"
        if email.split("@", 1)[0] in ROLE_LOCAL_PARTS:
            raise RowRejected("role_email", "row_role_email", True, email=email)
        tags = [t.strip() for t in row.get("tags", "").split(",") if t.strip()]
        if len(tags) > 10:
            raise RowRejected("too_many_tags", "row_too_many_tags", False)
        wanted = row.get("email_status", "").strip()
        if wanted and wanted not in IMPORTABLE_STATUSES:
            raise RowRejected("invalid_status", "row_bad_status", False, status=wanted)

        contact = existing
        if contact is None:
            contact = self._contact_for(account, email, wanted or "new")
        if wanted and existing is not None and contact.status in CHANGEABLE_STATUSES:
            contact.status = wanted
        if wanted and contact.status != wanted:
            # Docs: the status of an address that is not active/inactive cannot be changed.
            params = {"email": email, "status": contact.status}
            warnings.append(("status_not_changed", "warn_status_kept", params))
            if contact.status in OPTED_OUT and wanted in ("active", "new"):
                self._attempted(account, email, None, contact.status)
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
                # Replaces which lists the address is on; a per-list opt-out is remembered in
                # `unsubscribed_lists` all the same ([unverified]: the docs say overwrite_lists
                # replaces "which unsubscribed" too; the strict reading is that it cannot undo one).
                for lid in list(contact.lists):
                    if lid not in list_ids:
                        del contact.lists[lid]
            for pos, lid in enumerate(list_ids):
                added = times[pos] if pos < len(times) and times[pos] else now_text()
                report = wanted != "unsubscribed"
                self._join(account, contact, lid, added, warnings, report=report)
        for lid in self._ids_cell(row.get("email_unsubscribed_list_ids")):
            contact.unsubscribe_from(lid)
        for lid in self._ids_cell(row.get("email_excluded_list_ids")):
            contact.lists.pop(lid, None)
        return "updated" if existing is not None else "inserted"

    # --- exportContacts -----------------------------------------------------------------------

    def _export_rows(
        self, account: Account, args: dict[str, Any]
    ) -> tuple[list[str], list[list[str]]]:
        names = [str(n) for n in as_list(args.get("field_names"))] or [
            # Default columns when none are asked for: [unverified].
            "email",
            "email_status",
            "email_availability",
            "email_list_ids",
            "email_unsubscribed_list_ids",
            *sorted(account.field_names()),
        ]
        known = account.field_names()
        for name in names:
            if name not in EXPORT_COLUMNS and name not in known:
                raise ApiError("unknown_field", "invalid_arg", name=name)
        list_id = self._list_id_arg(args) if args.get("list_id") not in (None, "") else None
        if list_id is not None:
            account.require_list(list_id)
        only_email = str(args.get("email") or "").strip().lower()
        only_status = str(args.get("email_status") or "").strip()
        only_tag = str(args.get("tag") or "").strip()
        rows = []
        for contact in account.contacts.values():
            if list_id is not None and list_id not in contact.lists:
                continue
            if only_email and contact.email != only_email:
                continue
            if only_status and contact.status != only_status:
                continue
            if only_tag and only_tag not in contact.tags:
                continue
            rows.append([_export_cell(contact, name) for name in names])
        return names, rows

    def export_contacts(self, account: Account, args: dict[str, Any]) -> Any:
        """Legacy synchronous export: pages of at most 1000 rows (`offset`, `limit`)."""
        try:
            offset = int(str(args.get("offset", "0")))
            limit = int(str(args.get("limit", str(EXPORT_PAGE_LIMIT))))
        except ValueError:
            raise ApiError("bad_arg", "invalid_arg", name="limit", detail="integer") from None
        if offset < 0 or not 1 <= limit <= EXPORT_PAGE_LIMIT:
            detail = f"offset >= 0, 1 <= limit <= {EXPORT_PAGE_LIMIT}"
            raise ApiError("bad_arg", "invalid_arg", name="limit", detail=detail)
        names, rows = self._export_rows(account, args)
        return {"field_names": names, "data": rows[offset : offset + limit]}

    def export_contacts_async(self, account: Account, args: dict[str, Any]) -> Any:
        """`async/exportContacts`: a task; poll `async/getTaskResult`, or wait for notify_url."""
        notify_url = str(args.get("notify_url") or "").strip()
        if not notify_url:
            # Required per the EN doc (one client omits it and polls): the strict reading.
            raise ApiError("missing_arg", "invalid_arg", name="notify_url")
        names, rows = self._export_rows(account, args)
        task = ExportTask(
            uuid=str(uuid.uuid4()),
            api_key=account.api_key,
            field_names=names,
            rows=rows,
            notify_url=notify_url,
            base_url=str(args.get("_base_url") or "/"),
        )
        account.tasks[task.uuid] = task
        generation = self.generation
        self.timer.at(
            time.monotonic() + self.config.export_task_seconds,
            lambda: self._complete_export(account.api_key, task.uuid, generation),
        )
        return {"task_uuid": task.uuid, "status": task.status}

    def _complete_export(self, api_key: str, task_uuid: str, generation: int) -> None:
        with self.lock:
            account = self.accounts.get(api_key)
            task = account.tasks.get(task_uuid) if account else None
            if task is None or generation != self.generation:
                return
            task.status = "completed"
            # Docs: Unisender also POSTs to notify_url when the file is ready; the body is
            # [unverified] (the emulator sends what getTaskResult answers). One try only.
            delivery = Delivery(
                id=self.next_id(),
                api_key=api_key,
                login=account.login if account else "",
                hook_url=task.notify_url,
                events=[task.result()],
                first_try=time.monotonic(),
                kind="export_notify",
            )
            self._track(delivery)
        self._attempt(delivery.id, generation)

    def get_task_result(self, account: Account, args: dict[str, Any]) -> Any:
        task_uuid = str(args.get("task_uuid") or "").strip()
        if not task_uuid:
            raise ApiError("missing_arg", "invalid_arg", name="task_uuid")
        task = account.tasks.get(task_uuid)
        if task is None:
            raise ApiError("task_not_found", "invalid_arg", task_uuid=task_uuid)
        if task.status == "new":
            task.status = "processing"  # a poll before completion sees the work in progress
            return {**task.result(), "status": "new"}
        return task.result()

    def export_file(self, task_uuid: str) -> str | None:
        """The CSV behind `file_to_download` (header row, then one row per contact)."""
        with self.lock:
            for account in self.accounts.values():
                task = account.tasks.get(task_uuid)
                if task is not None and task.status == "completed":
                    out = io.StringIO()
                    writer = csv.writer(out)
                    writer.writerow(task.field_names)
                    writer.writerows(task.rows)
                    return out.getvalue()
        return None

    # --- single-contact methods ---------------------------------------------------------------

    def _find_contact(self, account: Account, args: dict[str, Any]) -> tuple[Contact | None, str]:
        kind = str(args.get("contact_type") or "")
        value = str(args.get("contact") or "").strip()
        if kind not in ("email", "phone"):
            raise ApiError("bad_arg", "invalid_arg", name="contact_type", detail="email | phone")
        if not value:
            raise ApiError("missing_arg", "invalid_arg", name="contact")
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
            raise ApiError("contact_not_found", "unspecified", empty_result=True, contact=value)
        for lid in targets:
            del contact.lists[lid]  # removed, not unsubscribed: it may be added again later
        return {}

    def unsubscribe(self, account: Account, args: dict[str, Any]) -> Any:
        contact, value = self._find_contact(account, args)
        targets = self._target_lists(account, contact, args) if contact else []
        if contact is None or not targets:
            raise ApiError("contact_not_found", "unspecified", empty_result=True, contact=value)
        for lid in targets:
            contact.unsubscribe_from(lid)  # account-level status is unchanged
        # Whether an API unsubscribe fires the hook is [unverified]; it is the person's opt-out
        # (docs: use it only for person-initiated ones), so the emulator reports it.
        self.emit(
            account, [_event("subscribe_status", contact, "unsubscribed", lid) for lid in targets]
        )
        return {}

    def subscribe(self, account: Account, args: dict[str, Any]) -> Any:
        list_ids = self._ids_cell(args.get("list_ids"))
        if not list_ids:
            raise ApiError("missing_arg", "invalid_arg", name="list_ids")
        for lid in list_ids:
            account.require_list(lid)
        fields = args.get("fields")
        if not isinstance(fields, dict) or not (fields.get("email") or fields.get("phone")):
            raise ApiError("missing_arg", "invalid_arg", name="fields[email]")
        email = str(fields.get("email") or "").strip().lower()
        if not email or not _EMAIL.match(email):
            raise ApiError("invalid_email", "invalid_arg", email=email)
        known = account.field_names()
        unknown = [n for n in fields if n not in ("email", "phone") and n not in known]
        if unknown:
            raise ApiError("unknown_field", "invalid_arg", name=unknown[0])
        contact = account.contacts.get(email)
        optin = str(args.get("double_optin", "0"))
        ready = contact is not None and contact.status in ("new", "active")
        if optin != "3" and not (optin == "4" and ready):
            # Sandbox lists have no confirmation letters, so every opt-in email fails like this.
            ids = ",".join(str(i) for i in list_ids)
            raise ApiError("no_confirmation_letters", "unspecified", list_ids=ids)
        if contact is None:
            contact = self._contact_for(account, email, "new")
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
            self._join(account, contact, lid, now_text())
        return {"person_id": self.number(contact.id)}

    def get_contact(self, account: Account, args: dict[str, Any]) -> Any:
        email = str(args.get("email") or "").strip().lower()
        if not email:
            raise ApiError("missing_arg", "invalid_arg", name="email")
        contact = account.contacts.get(email)
        if contact is None:
            # [unverified]: the real answer for an unknown address is undocumented.
            raise ApiError("contact_not_found", "unspecified", contact=email)

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
        if not email:
            raise ApiError("missing_arg", "invalid_arg", name="email")
        if not list_ids:
            raise ApiError("missing_arg", "invalid_arg", name="list_ids")
        if condition not in ("or", "and"):
            raise ApiError("bad_arg", "invalid_arg", name="condition", detail="or | and")
        contact = account.contacts.get(email)
        member = [
            contact is not None
            and lid in contact.lists
            and contact.lists[lid].status != "unsubscribed"
            for lid in list_ids
        ]
        return all(member) if condition == "and" else any(member)

    # --- hooks --------------------------------------------------------------------------------

    def set_hook(self, account: Account, args: dict[str, Any]) -> Any:
        url = str(args.get("hook_url") or "").strip()
        if not url:
            raise ApiError("missing_arg", "invalid_arg", name="hook_url")
        if not url.startswith(("http://", "https://")):
            raise ApiError("bad_arg", "invalid_arg", name="hook_url", detail="http(s) URL")
        events = [str(e) for e in as_list(args.get("events"))]
        if not events:
            raise ApiError("missing_arg", "invalid_arg", name="events")
        bad = [e for e in events if e not in HOOK_EVENTS]
        if bad:
            detail = f"unknown event {bad[0]!r} (known: {', '.join(sorted(HOOK_EVENTS))})"
            raise ApiError("bad_arg", "invalid_arg", name="events", detail=detail)
        event_format = str(args.get("event_format") or "json_post")
        if event_format not in EVENT_FORMATS:
            detail = ", ".join(sorted(EVENT_FORMATS))
            raise ApiError("bad_arg", "invalid_arg", name="event_format", detail=detail)
        status = str(args.get("status") or "active")
        if status not in HOOK_STATUSES:
            detail = " | ".join(sorted(HOOK_STATUSES))
            raise ApiError("bad_arg", "invalid_arg", name="status", detail=detail)
        try:
            max_parallel = int(str(args.get("max_parallel") or "10"))
        except ValueError:
            max_parallel = 0
        if max_parallel < 1:
            raise ApiError("bad_arg", "invalid_arg", name="max_parallel", detail=">= 1")
        previous = account.hooks.get(url)
        # Docs: calling setHook again with the same URL replaces that hook.
        account.hooks[url] = Hook(
            url=url,
            events=list(dict.fromkeys(events)),
            event_format=event_format,
            single_event=str(args.get("single_event") or "0") == "1",
            max_parallel=max_parallel,
            status=status,
            created_at=previous.created_at if previous else now_text(),
            updated_at=now_text(),
        )
        # The result of setHook is [unverified]: an empty object, so a client cannot depend on it.
        return {}

    def _require_admin_methods(self, method: str) -> None:
        if not self.config.hook_admin_methods:
            raise ApiError("unknown_method", "unknown_method", method=method)

    def list_hooks(self, account: Account, args: dict[str, Any]) -> Any:
        # listHooks / removeHook: names and results [unverified] (see SandboxConfig).
        self._require_admin_methods("listHooks")
        return [h.to_json() for h in account.hooks.values()]

    def remove_hook(self, account: Account, args: dict[str, Any]) -> Any:
        self._require_admin_methods("removeHook")
        url = str(args.get("hook_url") or "").strip()
        if not url:
            raise ApiError("missing_arg", "invalid_arg", name="hook_url")
        if account.hooks.pop(url, None) is None:
            raise ApiError("hook_not_found", "unspecified", hook_url=url)
        return {}

    def emit(self, account: Account, events: list[dict[str, Any]]) -> list[Delivery]:
        """Queue `events` to every active hook of `account` that asked for their kind."""
        made: list[Delivery] = []
        with self.lock:
            for hook in account.hooks.values():
                wanted = [e for e in events if e["event_name"] in hook.events]
                if not wanted:
                    continue
                if hook.status != "active":
                    # [unverified] and strict: events while a hook is off are lost, not queued.
                    for event in wanted:
                        self._record_dropped(account, hook, event)
                    continue
                batches = [[e] for e in wanted] if hook.single_event else [wanted]
                for batch in batches:
                    delivery = Delivery(
                        id=self.next_id(),
                        api_key=account.api_key,
                        login=account.login,
                        hook_url=hook.url,
                        events=batch,
                        first_try=time.monotonic(),
                    )
                    self._track(delivery)
                    made.append(delivery)
            generation = self.generation
        for delivery in made:
            self.timer.at(
                time.monotonic(), functools.partial(self._attempt, delivery.id, generation)
            )
        return made

    def _record_dropped(self, account: Account, hook: Hook, event: dict[str, Any]) -> None:
        self.deliveries.append(
            Delivery(
                id=self.next_id(),
                api_key=account.api_key,
                login=account.login,
                hook_url=hook.url,
                events=[event],
                first_try=time.monotonic(),
                state="dropped",
            )
        )

    def _track(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.pending[delivery.id] = delivery

    def _settle(self, delivery: Delivery, state: str) -> None:
        delivery.state = state
        self.pending.pop(delivery.id, None)

    def _attempt(self, delivery_id: int, generation: int) -> None:
        """Send one delivery once; schedule the next try or stop the hook after the period."""
        with self.lock:
            delivery = self.pending.get(delivery_id)
            if delivery is None or generation != self.generation or delivery.state != "pending":
                return
            account = self.accounts.get(delivery.api_key)
            hook = account.hooks.get(delivery.hook_url) if account else None
            if delivery.kind == "hook":
                if hook is None or hook.status != "active":
                    self._settle(delivery, "dropped")
                    return
                if hook.in_flight >= hook.max_parallel:
                    later = time.monotonic() + 0.05
                    self.timer.at(later, lambda: self._attempt(delivery_id, generation))
                    return
                hook.in_flight += 1
            body = delivery.body()
            timeout = self.config.hook_timeout_seconds
        status, error = post_json(delivery.hook_url, body, timeout)
        with self.lock:
            if hook is not None:
                hook.in_flight -= 1
            if generation != self.generation:
                return
            delivery.attempts.append(
                {
                    "time": now_text(),
                    "retry_count": delivery.retry_count,
                    "status": status,
                    "error": error,
                }
            )
            if status == 200:
                self._settle(delivery, "delivered")
                return
            if hook is not None:
                hook.last_error = error or f"HTTP {status}"
            if delivery.kind != "hook" or hook is None:
                self._settle(delivery, "given_up")
                return
            interval = self.config.hook_retry_interval_seconds
            next_try = time.monotonic() + interval
            if next_try - delivery.first_try > self.config.hook_retry_period_seconds:
                self._settle(delivery, "given_up")
                hook.status = "stopped"  # docs: after 24 h without success
                hook.stopped_at = now_text()
                return
            delivery.retry_count += 1
        self.timer.at(next_try, lambda: self._attempt(delivery_id, generation))

    # --- a person acting in Unisender (control API) --------------------------------------------

    def simulate(
        self,
        account: Account,
        event: str,
        emails: list[str],
        list_ids: list[int] | None = None,
        campaign_id: int | None = None,
    ) -> list[Contact]:
        """A person unsubscribes / re-subscribes / bounces / complains; hooks are told."""
        if event not in SIMULATED_EVENTS:
            raise ValueError(f"event must be one of {sorted(SIMULATED_EVENTS)}")
        with self.lock:
            contacts = []
            for email in emails:
                contact = account.contacts.get(email.strip().lower())
                if contact is None:
                    raise KeyError(email)
                contacts.append(contact)
            for lid in list_ids or []:
                account.require_list(lid)
            name, status = SIMULATED_EVENTS[event]
            events: list[dict[str, Any]] = []
            for contact in contacts:
                targets = list(list_ids) if list_ids else sorted(contact.lists)
                if event == "unsubscribe":
                    if not list_ids:
                        contact.status = "unsubscribed"  # from everything: account-wide
                    for lid in targets:
                        contact.unsubscribe_from(lid)
                elif event == "subscribe":
                    # The person confirms through a Unisender form: the only way back to active.
                    if contact.status in (*OPTED_OUT, "new", "invited"):
                        contact.status = "active"
                    for lid in targets:
                        contact.unsubscribed_lists.discard(lid)
                        member = contact.lists.setdefault(lid, Membership("active", now_text()))
                        member.status = "active"
                elif event == "hard_bounce":
                    contact.availability = "unreachable"
                elif event == "soft_bounce":
                    contact.availability = "mailbox_full"
                elif event == "complaint":
                    contact.status = "blocked"  # docs: blocked by Unisender after a complaint
                if name == "subscribe_status":
                    per_list: list[int | None] = [*targets] or [None]
                    events += [_event(name, contact, status, lid) for lid in per_list]
                else:
                    event_body = _event(name, contact, status, None)
                    if campaign_id is not None:
                        event_body["event_data"]["campaign_id"] = campaign_id
                    events.append(event_body)
            self.emit(account, events)
            return contacts

    def opt_out(self, account: Account, email: str, list_ids: list[int] | None) -> Contact:
        """A person unsubscribing: from the given lists, or from everything."""
        return self.simulate(account, "unsubscribe", [email], list_ids)[0]


def _event(name: str, contact: Contact, status: str, list_id: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"email": contact.email, "status": status}
    if name == "subscribe_status":
        data["list_id"] = list_id
    return {"event_name": name, "event_time": now_text(), "event_data": data}


def _limit_error(hit: LimitHit) -> ApiError:
    scope = f" ({hit.method})" if hit.method else ""
    return ApiError(
        "rate_limit",
        hit.code,
        limit=hit.limit,
        seconds=f"{hit.window_seconds:g}",
        scope=scope,
    )


EXPORT_COLUMNS = frozenset(
    {
        "email",
        "email_status",
        "email_availability",
        "email_add_time",
        "email_list_ids",
        "email_subscribe_times",
        # [unverified] name (the reference found no export column for per-list unsubscribes): the
        # import column's name, listing the lists the address is unsubscribed from.
        "email_unsubscribed_list_ids",
        "tags",
        "phone",
    }
)


def _export_cell(contact: Contact, name: str) -> str:
    ids = sorted(contact.lists)
    if name == "email":
        return contact.email
    if name == "email_status":
        return contact.status
    if name == "email_availability":
        return contact.availability
    if name == "email_add_time":
        return contact.added_at
    if name == "email_list_ids":  # every list the address is on, whatever its status there
        return ",".join(str(i) for i in ids)
    if name == "email_subscribe_times":
        return ",".join(contact.lists[i].added_at for i in ids)
    if name == "email_unsubscribed_list_ids":
        return ",".join(str(i) for i in sorted(contact.unsubscribed_lists))
    if name == "tags":
        return ",".join(contact.tags)
    if name == "phone":
        return contact.phone or ""
    return contact.fields.get(name, "")


class RowRejected(Exception):
    """One importContacts row refused; it lands in `log` and the rest goes through."""

    def __init__(self, code: str, key: str, invalid: bool, **params: Any) -> None:
        super().__init__(render(key, DEFAULT_LANGUAGE, params))
        self.code = code
        self.key = key
        self.params = params
        self.invalid = invalid

    def key_text(self, lang: str) -> str:
        return render(self.key, lang, self.params)
