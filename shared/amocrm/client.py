"""amoCRM REST v4 client for one account: throttled, retried, paged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests

from shared.amocrm.errors import (
    Blocked,
    NotFound,
    RateLimited,
    Transient,
    Unauthorized,
    parse_retry_after,
    raise_for_response,
)
from shared.amocrm.models import Account, Contact, ContactPage, CustomField, Webhook
from shared.backoff import jittered_backoff
from shared.ratelimit import IntervalThrottle, Throttle

try:
    __version__ = version("amosync")
except PackageNotFoundError:  # a checkout that was never pip-installed
    __version__ = "0.0.0"

USER_AGENT = f"amosync/{__version__} (+https://github.com/amosync)"

logger = logging.getLogger(__name__)

Timeout = float | tuple[float, float]

MAX_PAGE = 250  # amoCRM's documented maximum for list reads
# The custom-fields list documents a smaller maximum page (50) than entity lists.
CUSTOM_FIELDS_PAGE = 50


class TokenProvider(Protocol):
    """Source of the account's access token; owns refreshing and storing rotated pairs."""

    def access_token(self) -> str:
        """A currently valid access token (refreshing first if it is known to be expired)."""

    def refresh_after_unauthorized(self, rejected_access_token: str) -> str:
        """amoCRM answered 401 to this token: return a fresh one (or raise)."""


class BlockGate(Protocol):
    """Where a 403 block is remembered across processes (shared.blocks.BlockGuard)."""

    def admit(self, probe: Callable[[], None]) -> None:
        """Return if a request may go out; raise `Blocked` if a block holds it (may probe)."""

    def record(self, exc: Blocked) -> None:
        """A request met a 403."""


class StaticTokenProvider:
    """A fixed token (long-lived tokens, tests); a 401 cannot be repaired."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=***)"

    def access_token(self) -> str:
        """The fixed token."""
        return self._token

    def refresh_after_unauthorized(self, rejected_access_token: str) -> str:
        """Nothing to refresh with."""
        raise Unauthorized("static access token was rejected", status=401)


class AmoCrmClient:
    """One account's amoCRM API; every request passes the throttle, retries are bounded."""

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        throttle: Throttle | None = None,
        session: requests.Session | None = None,
        timeout: Timeout = (5, 20),
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_inline_wait: float = 60.0,
        rate_limit_pause: float = 30.0,
        block_gate: BlockGate | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            base_url = f"https://{base_url}"
        self.base_url = base_url.rstrip("/")
        self._tokens = token_provider
        self._throttle: Throttle = throttle if throttle is not None else IntervalThrottle(rate=7)
        self._session = session or requests.Session()
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_inline_wait = max_inline_wait
        # A 429 without retry_after: amoCRM's warning before a ban, so no quick backoff.
        self._rate_limit_pause = rate_limit_pause
        self._block_gate = block_gate
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"AmoCrmClient(base_url={self.base_url!r})"

    def get_account(self, *, with_: Sequence[str] = ("is_api_filter_enabled",)) -> Account:
        """`GET /api/v4/account`; by default asks whether list filters work on this account."""
        params = {"with": ",".join(with_)} if with_ else None
        resp = self._request("GET", "/api/v4/account", params=params)
        return Account.model_validate(resp.json())

    def iter_contact_pages(
        self,
        *,
        limit: int = MAX_PAGE,
        updated_since: int | None = None,
        order: Mapping[str, str] | None = None,
        only_deleted: bool = False,
        start_page: int = 1,
    ) -> Iterator[ContactPage]:
        """Pages of `/api/v4/contacts` from `start_page` (resuming), following `_links.next`."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}")
        if start_page < 1:
            raise ValueError("start_page must be >= 1")
        params: dict[str, Any] = {"limit": limit}
        if start_page > 1:
            params["page"] = start_page
        if updated_since is not None:
            params["filter[updated_at][from]"] = int(updated_since)
        for field, direction in (order or {}).items():
            params[f"order[{field}]"] = direction
        if only_deleted:
            params["with"] = "only_deleted"
        url: str | None = "/api/v4/contacts"
        page_no = start_page
        while url is not None:
            resp = self._request("GET", url, params=params)
            if resp.status_code == 204:
                return
            body = resp.json()
            contacts = (body.get("_embedded") or {}).get("contacts") or []
            page_no = int(body.get("_page") or page_no)
            yield ContactPage(page=page_no, contacts=[Contact.model_validate(c) for c in contacts])
            href = ((body.get("_links") or {}).get("next") or {}).get("href")
            if not href or not contacts:
                return
            url, params = self._same_origin(href), {}
            page_no += 1

    def iter_contacts(
        self,
        *,
        limit: int = MAX_PAGE,
        updated_since: int | None = None,
        order: Mapping[str, str] | None = None,
        only_deleted: bool = False,
    ) -> Iterator[Contact]:
        """Every contact, page by page (memory stays one page)."""
        for page in self.iter_contact_pages(
            limit=limit, updated_since=updated_since, order=order, only_deleted=only_deleted
        ):
            yield from page.contacts

    def iter_contacts_updated_since(
        self, watermark: int, *, overlap: int = 60, use_filter: bool = True
    ) -> Iterator[Contact]:
        """Contacts with `updated_at >= watermark - overlap`, newest first, deduped.

        The list filter is "alpha" and reportedly ignored silently on some accounts, so it is
        only an optimisation: we sort by `updated_at` desc and stop at the first older contact.
        Filter bound inclusiveness is undocumented, hence the overlap; callers dedupe by
        `(id, updated_at)` across runs and use the highest `updated_at` seen as the next watermark.
        """
        floor = max(0, int(watermark) - max(0, overlap))
        seen: set[tuple[int, int]] = set()
        pages = self.iter_contact_pages(
            updated_since=floor if use_filter else None, order={"updated_at": "desc"}
        )
        for page in pages:
            for contact in page.contacts:
                if contact.updated_at < floor:
                    return
                # A contact edited while we page moves to page 1 and shifts the rest down.
                key = (contact.id, contact.updated_at)
                if key not in seen:
                    seen.add(key)
                    yield contact

    def get_contact(self, contact_id: int) -> Contact | None:
        """One contact; None when amoCRM has no such contact or it is in the trash."""
        try:
            resp = self._request("GET", f"/api/v4/contacts/{int(contact_id)}")
        except NotFound:
            return None
        if resp.status_code == 204 or not resp.content:
            return None
        contact = Contact.model_validate(resp.json())
        # Whether a trashed contact comes back as 204 or 200 with is_deleted is unverified.
        return None if contact.is_deleted else contact

    def get_contact_custom_fields(self) -> list[CustomField]:
        """Every contact custom field with its enums (the account-specific enum ids)."""
        fields: list[CustomField] = []
        url: str | None = "/api/v4/contacts/custom_fields"
        params: dict[str, Any] = {"limit": CUSTOM_FIELDS_PAGE}
        while url is not None:
            resp = self._request("GET", url, params=params)
            if resp.status_code == 204:
                break
            body = resp.json()
            items = (body.get("_embedded") or {}).get("custom_fields") or []
            fields.extend(CustomField.model_validate(item) for item in items)
            href = ((body.get("_links") or {}).get("next") or {}).get("href")
            url = self._same_origin(href) if href and items else None
            params = {}
        return fields

    def subscribe_webhook(
        self, destination: str, events: Sequence[str], *, sort: int | None = None
    ) -> Webhook:
        """`POST /api/v4/webhooks` for these events (e.g. add_contact, update_contact)."""
        payload: dict[str, Any] = {"destination": destination, "settings": list(events)}
        if sort is not None:
            payload["sort"] = sort
        resp = self._request("POST", "/api/v4/webhooks", json=payload)
        return Webhook.model_validate(resp.json())

    def list_webhooks(self, destination: str | None = None) -> list[Webhook]:
        """Subscriptions, optionally only the one with this exact destination."""
        params = {"filter[destination]": destination} if destination else None
        resp = self._request("GET", "/api/v4/webhooks", params=params)
        if resp.status_code == 204 or not resp.content:
            return []
        hooks = (resp.json().get("_embedded") or {}).get("webhooks") or []
        return [Webhook.model_validate(h) for h in hooks]

    def delete_webhook(self, destination: str) -> None:
        """`DELETE /api/v4/webhooks` with `{"destination": ...}`; an unknown one counts as done."""
        try:
            self._request("DELETE", "/api/v4/webhooks", json={"destination": destination})
        except NotFound:
            return

    def _same_origin(self, href: str) -> str:
        # Never send the bearer token to a host other than ours: a `next` link pointing
        # elsewhere (e.g. the account host while we use an API override) is re-based on base_url.
        absolute = urljoin(self.base_url + "/", href)
        target, base = urlsplit(absolute), urlsplit(self.base_url)
        if (target.scheme, target.netloc) == (base.scheme, base.netloc):
            return absolute
        return f"{self.base_url}{target.path}" + (f"?{target.query}" if target.query else "")

    def _backoff(self, attempt: int) -> float:
        return jittered_backoff(attempt, base=self._backoff_base, cap=self._backoff_cap)

    def probe(self) -> None:
        """The cheapest authorized request (`GET /api/v4/account`): is amoCRM letting us in?"""
        self._send("GET", "/api/v4/account", None, None)

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> requests.Response:
        if self._block_gate is None:
            return self._send(method, path_or_url, params, json)
        # While amoCRM blocks us (403) nothing is sent but the gate's probe.
        self._block_gate.admit(self.probe)
        try:
            return self._send(method, path_or_url, params, json)
        except Blocked as exc:
            self._block_gate.record(exc)
            raise

    def _send(
        self, method: str, path_or_url: str, params: Mapping[str, Any] | None, json: Any
    ) -> requests.Response:
        """One request with its retries, refresh and throttle (`_request` adds the block gate)."""
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        token = self._tokens.access_token()
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            self._throttle.acquire()
            headers = {
                "Authorization": f"Bearer {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            }
            try:
                resp = self._session.request(
                    method, url, params=params, json=json, headers=headers, timeout=self._timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt >= self._max_attempts:
                    # The exception's text repeats the whole URL, query included: a webhook
                    # destination in `filter[destination]` carries its secret. Name the type only.
                    raise Transient(
                        f"amoCRM {method} {urlsplit(url).path}: {type(exc).__name__}"
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning(
                    "amocrm %s %s failed (%s), retry %d in %.1fs",
                    method,
                    urlsplit(url).path,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self._sleep(delay)
                continue
            status = resp.status_code
            logger.debug(
                "amocrm %s %s -> %s request_id=%s",
                method,
                urlsplit(url).path,
                status,
                resp.headers.get("X-Request-Id"),
            )
            if status == 401 and not refreshed:
                refreshed = True
                attempt -= 1  # the refresh retry is not a transient-failure attempt
                token = self._tokens.refresh_after_unauthorized(token)
                continue
            if status == 429:
                asked = parse_retry_after(resp, _safe_json(resp))
                delay = asked if asked else self._rate_limit_pause
                # Pause every caller of this throttle (the account and its egress IP's budgets).
                self._throttle.pause(delay)
                logger.warning(
                    "amocrm 429 on %s, paused %.1fs request_id=%s",
                    urlsplit(url).path,
                    delay,
                    resp.headers.get("X-Request-Id"),
                )
                if attempt >= self._max_attempts or delay > self._max_inline_wait:
                    raise RateLimited(
                        "amoCRM rate limit",
                        retry_after=delay,
                        status=429,
                        request_id=resp.headers.get("X-Request-Id"),
                    )
                continue  # acquire() waits out the pause
            if status >= 500 and attempt < self._max_attempts:
                delay = self._backoff(attempt)
                logger.warning(
                    "amocrm %s %s -> %s, retry %d in %.1fs request_id=%s",
                    method,
                    urlsplit(url).path,
                    status,
                    attempt,
                    delay,
                    resp.headers.get("X-Request-Id"),
                )
                self._sleep(delay)
                continue
            raise_for_response(resp)
            return resp


def _safe_json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
