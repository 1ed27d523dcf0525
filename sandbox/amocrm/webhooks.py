"""amoCRM-shaped webhook bodies and their delivery to subscribed destinations."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import threading
import time
from typing import Any
from urllib.parse import urlencode

import requests

from sandbox.amocrm.state import AccountRec, Change, EntityRec, WebhookRec, World

WEBHOOK_USER_AGENT = "amoCRM-WebHook-client/1.0"
DISABLE_USER_AGENT = "amoService-oAuth-Code-Sender/1.0"
ACTIONS = ("add", "update", "delete", "restore")


def escape(value: Any) -> str:
    # amoCRM is PHP: values arrive through htmlspecialchars (`&amp;` is in real captures);
    # escaping quotes too (ENT_QUOTES, PHP 8.1's default) is our assumption, the stricter one.
    text = str(value)
    for raw, entity in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ('"', "&quot;"),
        ("'", "&#039;"),
    ):
        text = text.replace(raw, entity)
    return text


def entity_pairs(
    account: AccountRec, rec: EntityRec, action: str, prefix: str
) -> list[tuple[str, str]]:
    """The bracketed keys of one entity in the v2 layout amoCRM still uses for hooks."""
    if action == "delete":
        return [(f"{prefix}[id]", str(rec.id)), (f"{prefix}[type]", rec.type)]
    pairs: list[tuple[str, Any]] = [
        ("[id]", rec.id),
        ("[name]", rec.name),
        ("[responsible_user_id]", rec.responsible_user_id),
        ("[date_create]", rec.created_at),
        ("[last_modified]", rec.updated_at),
        ("[created_user_id]", rec.created_by),
        ("[modified_user_id]", rec.updated_by),
        ("[account_id]", rec.account_id),
    ]
    fields = [f for f in account.fields if f.id in rec.values]
    for i, fdef in enumerate(fields):
        cf = f"[custom_fields][{i}]"
        pairs += [(f"{cf}[id]", fdef.id), (f"{cf}[name]", fdef.name)]
        if fdef.code:
            pairs.append((f"{cf}[code]", fdef.code))
        for j, (value, enum_id) in enumerate(rec.values[fdef.id]):
            pairs.append((f"{cf}[values][{j}][value]", value))
            if enum_id is not None:
                # Hooks carry the account-specific enum *id* here, not WORK/PRIV.
                pairs.append((f"{cf}[values][{j}][enum]", enum_id))
    pairs += [("[created_at]", rec.created_at), ("[updated_at]", rec.updated_at)]
    pairs.append(("[type]", rec.type))
    return [(prefix + key, escape(value)) for key, value in pairs]


def build_body(account: AccountRec, changes: list[Change]) -> list[tuple[str, str]]:
    """One POST body: the account block first, then contacts[action][i] for every change."""
    pairs = [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.id)),
        ("account[_links][self]", f"https://{account.host}"),
    ]
    for action in ACTIONS:
        group = [c for c in changes if c.action == action]
        for i, change in enumerate(group):
            # Companies are filed under contacts[...] too, told apart only by [type].
            pairs += entity_pairs(account, change.entity, action, f"contacts[{action}][{i}]")
    return pairs


def wanted(settings: list[str], change: Change) -> bool:
    """Whether a subscription receives this change.

    amoCRM files companies under `contacts[...]`; here a contact subscription also receives
    company changes on purpose, so every consumer is tested on ignoring `type=company`.
    """
    return f"{change.action}_{change.entity.type}" in settings or (
        change.entity.type == "company" and f"{change.action}_contact" in settings
    )


def deliver(
    world: World, account: AccountRec, changes: list[Change], *, wait: bool = True
) -> list[dict[str, Any]]:
    """POST one body per subscribed destination; synchronous unless `wait` is False."""
    with world.lock:
        hooks = [h for h in account.webhooks.values() if not h.disabled]
        jobs = []
        for hook in sorted(hooks, key=lambda h: h.sort):
            selected = [c for c in changes if wanted(hook.settings, c)]
            if selected:
                jobs.append((hook, build_body(account, selected)))
        records = [_record(world, account, hook, body) for hook, body in jobs]

    def run() -> None:
        for record in records:
            attempt(world, record)

    if wait:
        run()
    else:
        threading.Thread(target=run, name="sandbox-amocrm-webhooks", daemon=True).start()
    return records


def _record(
    world: World,
    account: AccountRec,
    hook: WebhookRec,
    body: list[tuple[str, str]],
    *,
    attempt_no: int = 1,
    retry_of: int | None = None,
) -> dict[str, Any]:
    """A delivery record, appended to the world's log. Hold world.lock."""
    record = {
        "id": len(world.deliveries) + 1,
        "account_id": account.id,
        "hook_id": hook.id,
        "destination": hook.destination,
        "body": body,
        "attempt": attempt_no,
        "retry_of": retry_of,
        "status": None,
        "error": None,
    }
    world.deliveries.append(record)
    return record


def attempt(world: World, record: dict[str, Any]) -> None:
    """POST one delivery, then apply amoCRM's rules: count failures, disable, redeliver."""
    _post(world, record)
    _settle(world, record)


def _valid(record: dict[str, Any]) -> bool:
    # amoCRM wants an HTTP 100-299 answer within the timeout; anything else is "invalid".
    status = record.get("status")
    return status is not None and 100 <= int(status) < 300


def _settle(world: World, record: dict[str, Any]) -> None:
    if _valid(record):
        return
    cfg = world.config
    now = time.time()
    with world.lock:
        account = world.accounts.get(record["account_id"])
        hook = account.webhooks.get(record["destination"]) if account else None
        if account is None or hook is None or hook.id != record["hook_id"] or hook.disabled:
            return  # unsubscribed, re-created or already disabled meanwhile: nothing to retry
        hook.failures.append(now)
        while hook.failures and hook.failures[0] <= now - float(cfg.webhook_disable_window):
            hook.failures.popleft()
        limit = int(cfg.webhook_disable_after)
        # "More than N invalid responses in the last 2 h, and the last one invalid too": this
        # one is the latest and it is invalid, so the count alone decides.
        if limit > 0 and len(hook.failures) > limit:
            hook.disabled = True
            hook.updated_at = int(now)
            record["disabled_hook"] = True
            return
        delays = cfg.retry_delays()
        n = int(record["attempt"])  # the attempt that just failed; the next is n + 1
        if n > len(delays):
            return
        # [2nd]: the 2nd and 3rd attempts follow any invalid answer; the 4th and 5th only a
        # 499/5xx. A timeout is amoCRM closing the request, i.e. its own 499 [our reading].
        status = record.get("status")
        if status is None:
            server_side = "Timeout" in str(record.get("error"))
        else:
            server_side = int(status) == 499 or int(status) >= 500
        if n >= 3 and not server_side:
            return
        retry = _record(
            world, account, hook, record["body"], attempt_no=n + 1, retry_of=record["id"]
        )
        retry["due_at"] = now + delays[n - 1]
        redeliveries(world).schedule(retry)


class Redeliveries:
    """One thread that sends due redeliveries in time order (no thread per pending retry)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._generation = world.generation
        threading.Thread(target=self._run, name="sandbox-amocrm-redelivery", daemon=True).start()

    def schedule(self, record: dict[str, Any]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (record["due_at"], next(self._seq), record))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.time():
                    timeout = self._heap[0][0] - time.time() if self._heap else None
                    self._cond.wait(timeout)
                _, _, record = heapq.heappop(self._heap)
            if self.world.generation != self._generation:
                continue  # scheduled before a reset: that world is gone
            attempt(self.world, record)


_redeliveries_lock = threading.Lock()


def redeliveries(world: World) -> Redeliveries:
    """The world's redelivery queue, started on first use and replaced after a reset."""
    with _redeliveries_lock:
        queue = getattr(world, "redeliveries", None)
        if not isinstance(queue, Redeliveries) or queue._generation != world.generation:
            queue = Redeliveries(world)
            world.redeliveries = queue
        return queue


def _post(world: World, record: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        resp = requests.post(
            record["destination"],
            data=urlencode(record["body"]),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": WEBHOOK_USER_AGENT,
            },
            timeout=world.config.webhook_timeout,
        )
        record["status"] = resp.status_code
    except requests.RequestException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    record["delivered_at"] = time.time()


def disable_signature(client_secret: str, client_uuid: str, account_id: int) -> str:
    """hex HMAC-SHA256(client_secret, client_uuid + "|" + account_id), as amoCRM signs it."""
    message = f"{client_uuid}|{account_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


def send_disable_hook(world: World, account: AccountRec) -> dict[str, Any]:
    """Revoke the account's tokens and GET the integration's disable hook, signed."""
    revoked = world.revoke_tokens(account)
    cfg = world.config
    result: dict[str, Any] = {"revoked_tokens": revoked, "url": None, "status": None, "error": None}
    if not cfg.disable_hook_url:
        result["error"] = "no disable hook URL configured"
        return result
    params = {
        "client_uuid": cfg.client_id,
        "account_id": str(account.id),
        "signature": disable_signature(cfg.client_secret, cfg.client_id, account.id),
    }
    result["url"] = cfg.disable_hook_url
    result["params"] = params
    try:
        resp = requests.get(
            cfg.disable_hook_url,
            params=params,
            headers={"User-Agent": DISABLE_USER_AGENT},
            timeout=cfg.webhook_timeout,
        )
        result["status"] = resp.status_code
    except requests.RequestException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def send_widget_install(world: World, account: AccountRec, code: str) -> dict[str, Any]:
    """The server-side GET amoCRM makes on widget install: code, referer, from_widget, no state."""
    params = {
        "code": code,
        "referer": account.host,
        "from_widget": "1",
        "client_id": world.config.client_id,
    }
    result: dict[str, Any] = {"url": world.config.redirect_uri, "params": params}
    try:
        # amoCRM waits 3 s, ignores the answer and never resends.
        resp = requests.get(world.config.redirect_uri, params=params, timeout=3)
        result["status"] = resp.status_code
    except requests.RequestException as exc:
        result["status"] = None
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result
