"""In-memory world of the amoCRM emulator: accounts, contacts, grants, hooks, request log."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jwt

from sandbox.amocrm.config import SandboxConfig
from sandbox.amocrm.limits import Limiter

CODE_TTL = 20 * 60  # authorization codes live 20 minutes
REFRESH_TTL = 90 * 24 * 3600  # refresh tokens: 3 months
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")
CONTACT_EVENTS = ("add_contact", "update_contact", "delete_contact", "restore_contact")
KNOWN_EVENTS = frozenset(
    [
        *CONTACT_EVENTS,
        "responsible_contact",
        "note_contact",
        *(
            f"{a}_{e}"
            for a in ("add", "update", "delete", "restore", "responsible", "note")
            for e in ("lead", "company", "customer")
        ),
        "status_lead",
        "add_task",
        "update_task",
        "delete_task",
        "responsible_task",
        "add_talk",
        "update_talk",
        "add_message",
        "add_outgoing_message",
        "add_chat_template_review",
    ]
)


class SandboxError(Exception):
    """A control-API request the sandbox refuses (400/404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class OAuthFailure(Exception):
    """A token-endpoint failure rendered as amoCRM's OAuth problem JSON."""

    def __init__(
        self, status: int, hint: str | None, *, title: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(hint or title or "")
        self.status = status
        self.hint = hint
        self.title = title
        self.detail = detail


@dataclass
class FieldDef:
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    enums: list[tuple[int, str, int]] = field(default_factory=list)  # (id, value, sort)

    def enum_id(self, code: str) -> int | None:
        return next((eid for eid, value, _ in self.enums if value == code), None)

    def enum_code(self, enum_id: int | None) -> str | None:
        return next((value for eid, value, _ in self.enums if eid == enum_id), None)


@dataclass
class EntityRec:
    id: int
    account_id: int
    type: str  # "contact" or "company"
    name: str
    first_name: str
    last_name: str
    responsible_user_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    # field id -> [(value, enum_id | None)]
    values: dict[int, list[tuple[str, int | None]]] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class WebhookRec:
    id: int
    destination: str
    settings: list[str]
    sort: int
    created_at: int
    updated_at: int
    created_by: int
    disabled: bool = False
    # When deliveries to this hook got an invalid response (for the auto-disable rule).
    failures: deque[float] = field(default_factory=deque, repr=False)


@dataclass(frozen=True)
class ContactQuery:
    """What one GET /api/v4/contacts asks for, minus the page: the key of a cached list view."""

    only_deleted: bool = False
    ids: frozenset[int] | None = None  # filter[id]
    updated_from: int | None = None  # filter[updated_at][from] (or bare), inclusive
    updated_to: int | None = None  # filter[updated_at][to], inclusive
    text: str | None = None  # query=, lower-cased
    order: str = "id"  # "id" or "updated_at"
    desc: bool = False

    def build(self, entities: dict[int, EntityRec]) -> list[EntityRec]:
        """Every matching contact in list order: O(N log N) once, then pages are slices."""
        if self.ids is not None:
            candidates: Any = (entities[i] for i in self.ids if i in entities)
        else:
            candidates = entities.values()
        low, high, only_deleted = self.updated_from, self.updated_to, self.only_deleted
        items = [
            e
            for e in candidates
            if e.type == "contact"
            and e.deleted == only_deleted
            and (low is None or e.updated_at >= low)
            and (high is None or e.updated_at <= high)
        ]
        if self.text:
            needle = self.text
            items = [
                e
                for e in items
                if needle in e.name.lower()
                or any(needle in v.lower() for vals in e.values.values() for v, _ in vals)
            ]
        # (key, id): ids break ties, so the order is total. Already id-ordered input is a
        # single run for Timsort, i.e. linear.
        if self.order == "updated_at":
            items.sort(key=lambda e: (e.updated_at, e.id), reverse=self.desc)
        else:
            items.sort(key=lambda e: e.id, reverse=self.desc)
        return items


MAX_VIEWS = 16  # cached list views per account (distinct filter/order combinations)


@dataclass
class AccountRec:
    id: int
    subdomain: str
    name: str
    user_id: int
    created_at: int
    fields: list[FieldDef]
    api_filter_enabled: bool = True
    blocked: bool = False
    # Keyed and inserted by id: ids only grow (one global counter), so iteration is id order.
    entities: dict[int, EntityRec] = field(default_factory=dict)
    webhooks: dict[str, WebhookRec] = field(default_factory=dict)
    # Bumped by every World method that adds, changes, trashes or restores an entity; the
    # contact-list views below are rebuilt (once) when it moves. Change entities through World.
    version: int = 0
    views: dict[ContactQuery, list[EntityRec]] = field(default_factory=dict, repr=False)
    views_version: int = -1

    @property
    def host(self) -> str:
        return f"{self.subdomain}.amocrm.ru"

    def field_by_code(self, code: str) -> FieldDef | None:
        return next((f for f in self.fields if f.code == code), None)

    def contact_view(self, query: ContactQuery) -> list[EntityRec]:
        """The contacts `query` lists, in order; built once per change batch. Hold World.lock."""
        if self.views_version != self.version:
            self.views.clear()
            self.views_version = self.version
        view = self.views.get(query)
        if view is None:
            if len(self.views) >= MAX_VIEWS:
                del self.views[next(iter(self.views))]
            view = self.views[query] = query.build(self.entities)
        return view


@dataclass
class CodeRec:
    account_id: int
    issued_at: float
    used: bool = False


@dataclass
class AccessRec:
    account_id: int
    expires_at: float
    refresh: str  # the refresh token issued together with this access token
    revoked: bool = False


@dataclass
class RefreshRec:
    account_id: int
    expires_at: float
    access: str
    parent: str | None
    children: list[str] = field(default_factory=list)
    spent: bool = False
    revoked: bool = False


@dataclass
class Change:
    """One entity change, snapshotted for the webhook that reports it."""

    action: str  # add / update / delete / restore
    entity: EntityRec


class World:
    """All sandbox state behind one re-entrant lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.jwt_key = secrets.token_hex(32)
        self.accounts: dict[int, AccountRec] = {}
        self.codes: dict[str, CodeRec] = {}
        self.access: dict[str, AccessRec] = {}
        self.refresh: dict[str, RefreshRec] = {}
        self.request_log: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.limiter = Limiter()
        # Bumped by reset(): background work scheduled before it (webhook redeliveries) is
        # dropped. `redeliveries` is the queue sandbox.amocrm.webhooks starts on first use.
        self.generation = 0
        self.redeliveries: object | None = None
        # Global counters so ids differ between accounts, as they do in amoCRM.
        self._account_ids = itertools.count(29638927, 7919)
        self._field_ids = itertools.count(264911, 2)
        self._enum_ids = itertools.count(521305, 2)
        self._entity_ids = itertools.count(24851203)
        self._hook_ids = itertools.count(1001)
        for _ in range(config.seed_accounts):
            self.create_account()

    def create_account(
        self,
        *,
        subdomain: str | None = None,
        name: str | None = None,
        api_filter_enabled: bool = True,
    ) -> AccountRec:
        with self.lock:
            account_id = next(self._account_ids)
            subdomain = subdomain or f"sandbox{len(self.accounts) + 1}"
            if any(a.subdomain == subdomain for a in self.accounts.values()):
                raise SandboxError(f"subdomain {subdomain!r} is taken")
            fields = [
                self._new_field("Телефон", "multitext", "PHONE", 4, PHONE_ENUMS),
                self._new_field("Email", "multitext", "EMAIL", 6, EMAIL_ENUMS),
                self._new_field("Должность", "text", "POSITION", 2, ()),
            ]
            account = AccountRec(
                id=account_id,
                subdomain=subdomain,
                name=name or f"Sandbox {subdomain}",
                user_id=8744098 + len(self.accounts),
                created_at=int(time.time()),
                fields=fields,
                api_filter_enabled=api_filter_enabled,
            )
            self.accounts[account_id] = account
            return account

    def _new_field(
        self, name: str, kind: str, code: str | None, sort: int, enums: tuple[str, ...]
    ) -> FieldDef:
        return FieldDef(
            id=next(self._field_ids),
            name=name,
            type=kind,
            code=code,
            sort=sort,
            enums=[(next(self._enum_ids), value, (i + 1) * 2) for i, value in enumerate(enums)],
        )

    def add_field(self, account: AccountRec, spec: dict[str, Any]) -> FieldDef:
        with self.lock:
            fdef = self._new_field(
                str(spec.get("name") or f"Field {len(account.fields) + 1}"),
                str(spec.get("type") or "text"),
                spec.get("code"),
                int(spec.get("sort") or 500),
                tuple(str(e) for e in spec.get("enums") or ()),
            )
            account.fields.append(fdef)
            return fdef

    def account(self, account_id: int) -> AccountRec:
        try:
            return self.accounts[int(account_id)]
        except (KeyError, ValueError):
            raise SandboxError(f"no account {account_id}", 404) from None

    def issue_code(self, account: AccountRec, *, age_seconds: float = 0) -> str:
        with self.lock:
            code = "def50200" + secrets.token_hex(96)
            self.codes[code] = CodeRec(account.id, time.time() - age_seconds)
            return code

    def _issue_pair(self, account_id: int, parent: str | None) -> dict[str, Any]:
        now = int(time.time())
        ttl = int(self.config.token_ttl)
        account = self.accounts[account_id]
        claims = {
            "aud": self.config.client_id,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "sub": str(account.user_id),
            "account_id": account_id,
            "base_domain": "amocrm.ru",
            "version": 2,
            "scopes": ["crm", "notifications"],
            "api_domain": "api-b.amocrm.ru",
        }
        access = jwt.encode(claims, self.jwt_key, algorithm="HS256")
        refresh = "def50200" + secrets.token_hex(160)
        self.access[access] = AccessRec(account_id, time.time() + ttl, refresh)
        self.refresh[refresh] = RefreshRec(
            account_id, time.time() + REFRESH_TTL, access=access, parent=parent
        )
        if parent is not None:
            self.refresh[parent].children.append(refresh)
        return {
            "token_type": "Bearer",
            "expires_in": ttl,
            "access_token": access,
            "refresh_token": refresh,
            "server_time": now,
        }

    def _settle(self, refresh: str) -> None:
        # Rotation: the parent refresh token stays usable until a token of its new pair is
        # used. Then the parent is spent and any sibling pairs minted from it (a double refresh)
        # are revoked: only one chain survives, as in amoCRM where a double refresh breaks
        # whoever stored the other pair.
        rec = self.refresh.get(refresh)
        if rec is None or rec.parent is None:
            return
        parent = self.refresh[rec.parent]
        if parent.spent:
            return
        parent.spent = True
        for sibling in parent.children:
            if sibling != refresh:
                self.refresh[sibling].revoked = True
                self.access[self.refresh[sibling].access].revoked = True

    def grant(self, form: dict[str, Any]) -> dict[str, Any]:
        """The token endpoint's logic; raises OAuthFailure like amoCRM answers."""
        with self.lock:
            if form.get("client_id") != self.config.client_id:
                raise OAuthFailure(400, "Check the `client_id` parameter")
            if form.get("client_secret") != self.config.client_secret:
                raise OAuthFailure(
                    401, None, title="Некорректный клиент", detail="Авторизация клиента не прошла"
                )
            if form.get("redirect_uri") != self.config.redirect_uri:
                raise OAuthFailure(400, "Check the `redirect_uri` parameter")
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                code = self.codes.get(str(form.get("code") or ""))
                if code is None:
                    raise OAuthFailure(400, "Cannot decrypt the authorization code")
                if code.used:
                    raise OAuthFailure(400, "Authorization code has been revoked")
                if time.time() - code.issued_at > CODE_TTL:
                    raise OAuthFailure(400, "Authorization code has expired")
                code.used = True
                return self._issue_pair(code.account_id, None)
            if grant_type == "refresh_token":
                token = str(form.get("refresh_token") or "")
                rec = self.refresh.get(token)
                if rec is None:
                    raise OAuthFailure(400, "Cannot decrypt the refresh token")
                if rec.spent or rec.revoked:
                    raise OAuthFailure(401, "Token has been revoked", title="Unauthorized")
                if time.time() > rec.expires_at:
                    raise OAuthFailure(401, "Token has expired", title="Unauthorized")
                self._settle(token)
                return self._issue_pair(rec.account_id, token)
            raise OAuthFailure(400, "Check the `grant_type` parameter")

    def authenticate(self, access_token: str) -> AccountRec | None:
        """The account an API call's bearer token belongs to, or None (→ 401)."""
        with self.lock:
            rec = self.access.get(access_token)
            if rec is None or rec.revoked or time.time() > rec.expires_at:
                return None
            self._settle(rec.refresh)
            return self.accounts.get(rec.account_id)

    def revoke_tokens(self, account: AccountRec) -> int:
        with self.lock:
            count = 0
            for a in self.access.values():
                if a.account_id == account.id and not a.revoked:
                    a.revoked = True
                    count += 1
            for r in self.refresh.values():
                if r.account_id == account.id:
                    r.revoked = True
            return count

    def check_rate(self, ip: str, account_id: int, now: float) -> float | None:
        """Seconds until a slot frees if the IP or the account is over a limit, else None.

        An admitted request is counted in all three windows: the client IP across accounts,
        the account through our integration, the account across integrations.
        """
        cfg = self.config
        return self.limiter.admit(
            [
                ("ip", ip, int(cfg.ip_rate_limit)),
                ("account", str(account_id), int(cfg.rate_limit)),
                ("account_total", str(account_id), int(cfg.account_total_rate_limit)),
            ],
            now,
        )

    def take_fault(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.get("path_prefix") or "/api/v4") and fault["remaining"]:
                    fault["remaining"] -= 1
                    return dict(fault)
            return None

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_log.append(entry)

    def stats(
        self, *, account_id: int | None = None, path_prefix: str = "/api/v4"
    ) -> dict[str, Any]:
        with self.lock:
            entries = [
                e
                for e in self.request_log
                if e["path"].startswith(path_prefix)
                and (account_id is None or e["account_id"] == account_id)
            ]
        by_path: dict[str, int] = {}
        by_status: dict[str, int] = {}
        for e in entries:
            by_path[e["path"]] = by_path.get(e["path"], 0) + 1
            by_status[str(e["status"])] = by_status.get(str(e["status"]), 0) + 1
        return {
            "total": len(entries),
            "by_path": by_path,
            "by_status": by_status,
            "max_per_second": max_in_window(sorted(e["at"] for e in entries), 1.0),
        }

    def reset(self) -> None:
        with self.lock:
            self.accounts.clear()
            self.codes.clear()
            self.access.clear()
            self.refresh.clear()
            self.request_log.clear()
            self.deliveries.clear()
            self.faults.clear()
            self.limiter.clear()
            self.generation += 1
            for _ in range(self.config.seed_accounts):
                self.create_account()

    def apply_entity(
        self, account: AccountRec, spec: dict[str, Any], *, kind: str = "contact"
    ) -> EntityRec:
        """Create an entity from a control-API spec."""
        with self.lock:
            now = int(spec.get("updated_at") or time.time())
            rec = EntityRec(
                id=next(self._entity_ids),
                account_id=account.id,
                type=kind,
                name="",
                first_name="",
                last_name="",
                responsible_user_id=account.user_id,
                created_by=account.user_id,
                updated_by=account.user_id,
                created_at=int(spec.get("created_at") or now),
                updated_at=now,
            )
            self._fill(account, rec, spec)
            account.entities[rec.id] = rec
            account.version += 1
            return rec

    def update_entity(self, account: AccountRec, entity_id: int, spec: dict[str, Any]) -> EntityRec:
        with self.lock:
            rec = self.entity(account, entity_id)
            account.version += 1  # before _fill: a half-applied spec that raises still counts
            self._fill(account, rec, spec)
            rec.updated_at = int(spec.get("updated_at") or time.time())
            rec.updated_by = int(spec.get("updated_by") or account.user_id)
            return rec

    def set_deleted(self, account: AccountRec, entity_id: int, deleted: bool) -> EntityRec:
        with self.lock:
            rec = self.entity(account, entity_id)
            account.version += 1
            rec.deleted = deleted
            # A trashed entity's updated_at is the deletion time (seen with only_deleted).
            rec.updated_at = int(time.time())
            return rec

    def entity(self, account: AccountRec, entity_id: int) -> EntityRec:
        rec = account.entities.get(int(entity_id))
        if rec is None:
            raise SandboxError(f"no contact {entity_id} in account {account.id}", 404)
        return rec

    def _fill(self, account: AccountRec, rec: EntityRec, spec: dict[str, Any]) -> None:
        for key in ("name", "first_name", "last_name"):
            if key in spec:
                setattr(rec, key, str(spec[key] or ""))
        if "name" not in spec and ("first_name" in spec or "last_name" in spec):
            rec.name = f"{rec.first_name} {rec.last_name}".strip()
        if "responsible_user_id" in spec:
            rec.responsible_user_id = int(spec["responsible_user_id"])
        for key, code in (("emails", "EMAIL"), ("phones", "PHONE")):
            if key in spec:
                fdef = account.field_by_code(code)
                assert fdef is not None
                rec.values[fdef.id] = self._multitext(fdef, spec[key] or [])
                if not rec.values[fdef.id]:
                    del rec.values[fdef.id]
        for ref, value in (spec.get("fields") or {}).items():
            fdef = next((f for f in account.fields if ref in (f.code, f.name, str(f.id))), None)
            if fdef is None:
                raise SandboxError(f"unknown field {ref!r}")
            if value in (None, "", []):
                rec.values.pop(fdef.id, None)
            elif fdef.type == "multitext":
                rec.values[fdef.id] = self._multitext(fdef, value)
            else:
                rec.values[fdef.id] = [(str(value), None)]

    @staticmethod
    def _multitext(fdef: FieldDef, items: list[Any]) -> list[tuple[str, int | None]]:
        out: list[tuple[str, int | None]] = []
        for item in items:
            value, code = (
                (item, "WORK")
                if isinstance(item, str)
                else (
                    str(item["value"]),
                    str(item.get("enum") or item.get("enum_code") or "WORK"),
                )
            )
            enum_id = fdef.enum_id(code)
            if enum_id is None:
                raise SandboxError(f"{fdef.code} has no enum {code!r}")
            out.append((value, enum_id))
        return out


def max_in_window(times: list[float], window: float) -> int:
    """Largest number of sorted timestamps inside any half-open interval of `window` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best
