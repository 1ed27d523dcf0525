"""HTTP client for the Unisender email-marketing API (lists, fields, contacts)."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import requests

from shared.backoff import jittered_backoff
from shared.unisender.errors import (
    AccessDenied,
    InvalidApiKey,
    InvalidArgument,
    NotEnoughMoney,
    NotFound,
    RateLimited,
    Transient,
    UnisenderError,
    UnknownMethod,
    error_from_envelope,
)
from shared.unisender.models import (
    ContactField,
    ImportChunkResult,
    ImportResult,
    ImportRow,
    ListStatus,
    MailingList,
    RowError,
    UnisenderContact,
    canonical_email,
)

log = logging.getLogger(__name__)

USER_AGENT = "amosync-unisender/0.1 (+https://github.com/amosync)"
IMPORT_BATCH_LIMIT = 500  # documented hard cap of rows per importContacts call
IMPORT_MAX_ATTEMPTS = 3  # docs: no answer within 30 s -> retry at most 2 more times
MAX_VALUE_LENGTH = 255  # no documented limit for `string` fields: truncate defensively
EXPORT_PAGE_LIMIT = 1000  # legacy exportContacts: "not more than 1000 records at a time"
# What a list export asks for. `email_unsubscribed_list_ids` is the import column's name; as an
# export column it is [unverified] (reference §4): a service that refuses it answers invalid_arg,
# and `export_list_statuses` then returns None so callers fall back to getContact per address.
STATUS_COLUMNS = ("email", "email_status", "email_list_ids", "email_unsubscribed_list_ids")

# Columns importContacts treats specially; a user field may never shadow them. `email_status` in
# particular is never sent: see `_row_cells`.
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

# Errors after which a failed create may still mean "it exists now": the duplicate-title/name
# error code is [unverified] (probably `unspecified` or `invalid_arg`), so re-read on anything
# that is not clearly about the key, the account or our own code.
_NOT_A_DUPLICATE = (InvalidApiKey, AccessDenied, NotEnoughMoney, UnknownMethod, Transient)

Timeout = float | tuple[float, float]

# The `{LANG}/api` segment picks the language of error texts (reference §1). The few texts we
# recognise (shared.unisender.errors) are the English ones, so the client always calls `/en/api`.
_LANG_SEGMENT = re.compile(r"/[a-z]{2}/api$")


def english_api_url(base_url: str) -> str:
    """The API base with the `en` language segment (`…/ru/api` → `…/en/api`)."""
    return _LANG_SEGMENT.sub("/en/api", base_url.rstrip("/"))


def encode_form(params: Mapping[str, object]) -> list[tuple[str, str]]:
    """Flatten params into PHP bracket form pairs: `a[0]=x`, `a[0][1]=y`, `a[k]=z`."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(key, value, pairs)
    return pairs


def _flatten(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}[{key}]", item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    elif isinstance(value, bool):
        out.append((prefix, "1" if value else "0"))
    else:
        out.append((prefix, str(value)))


def join_ids(ids: Iterable[int]) -> str:
    """List ids go over the wire as one comma-separated string, not as a bracketed array."""
    return ",".join(str(int(i)) for i in dict.fromkeys(ids))


class UnisenderClient:
    """One Unisender API key; every argument travels in a form-encoded POST body."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str,
        platform: str = "amosync",
        session: requests.Session | None = None,
        timeout: Timeout = (5, 40),
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        batch_size: int = IMPORT_BATCH_LIMIT,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        if not 1 <= batch_size <= IMPORT_BATCH_LIMIT:
            raise ValueError(f"batch_size must be 1..{IMPORT_BATCH_LIMIT}")
        self._api_key = api_key
        self.base_url = english_api_url(base_url)
        self.platform = platform
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch_size = batch_size
        self.call_counts: Counter[str] = Counter()  # HTTP requests per method, retries included

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"UnisenderClient(base_url={self.base_url!r}, platform={self.platform!r})"

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        max_attempts: int | None = None,
    ) -> Any:
        """Call one API method and return its `result`, retrying transient failures.

        A call limit (`RateLimited`) is raised at once: waiting out its minute here would hold a
        worker idle; the retry policy (shared.failures) reschedules the job instead.
        """
        attempts = max(1, max_attempts or self.max_attempts)
        attempt = 1
        while True:
            try:
                return self._post(method, params or {})
            except RateLimited:
                raise
            except Transient as exc:
                if attempt >= attempts:
                    raise
                delay = self._backoff(attempt)
                log.warning(
                    "unisender transient failure, retrying",
                    extra={"method": method, "attempt": attempt, "code": exc.code, "delay": delay},
                )
                self._sleep(delay)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        return jittered_backoff(attempt, base=self.backoff_base, cap=self.backoff_cap)

    def _post(self, method: str, params: Mapping[str, object]) -> Any:
        # Everything, `format` and `api_key` included, goes in the body: a key in the URL ends up
        # in proxy/access logs, and mixing query and body arguments is a documented API error.
        body = [
            ("format", "json"),
            ("api_key", self._api_key),
            ("platform", self.platform),
            *encode_form(params),
        ]
        url = f"{self.base_url}/{method}"
        self.call_counts[method] += 1
        started = time.monotonic()
        try:
            response = self._session.post(
                url, data=body, timeout=self.timeout, headers={"User-Agent": USER_AGENT}
            )
        except requests.Timeout as exc:
            raise Transient(
                f"timed out: {type(exc).__name__}", code="timeout", method=method
            ) from exc
        except requests.RequestException as exc:
            raise Transient(
                f"connection failed: {type(exc).__name__}", code="connection", method=method
            ) from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.debug(
            "unisender call",
            extra={"method": method, "status": response.status_code, "elapsed_ms": elapsed_ms},
        )
        # HTTP statuses are undocumented (errors come inside 200 bodies): any non-2xx is transport.
        if not 200 <= response.status_code < 300:
            raise Transient(
                f"HTTP {response.status_code}", code=f"http_{response.status_code}", method=method
            )
        try:
            payload = response.json()
        except ValueError:
            raise Transient("response is not JSON", code="invalid_json", method=method) from None
        if not isinstance(payload, dict):
            raise Transient("response is not a JSON object", code="invalid_json", method=method)
        # `error` wins over `result`: error envelopes may carry `"result": ""` too.
        if payload.get("error") or payload.get("code"):
            raise error_from_envelope(payload.get("error"), payload.get("code"), method=method)
        if "result" not in payload:
            raise Transient("envelope has no result", code="invalid_json", method=method)
        for warning in payload.get("warnings") or ():
            log.info("unisender warning", extra={"method": method, "warning": str(warning)})
        return payload["result"]

    def get_lists(self) -> list[MailingList]:
        """All lists of the account."""
        result = self.call("getLists")
        return [MailingList.model_validate(item) for item in _as_list(result, "getLists")]

    def create_list(self, title: str) -> int:
        """Create a list; titles are unique per account, a duplicate is an error."""
        return _id_of(self.call("createList", {"title": title}), "createList")

    def ensure_list(self, title: str) -> int:
        """Id of the list with exactly this title, created only if absent."""
        found = self._find_list(title)
        if found is not None:
            return found
        try:
            return self.create_list(title)
        except _NOT_A_DUPLICATE:
            raise
        except UnisenderError:
            # Another worker may have created it meanwhile: the title is taken, read it back.
            found = self._find_list(title)
            if found is None:
                raise
            return found

    def _find_list(self, title: str) -> int | None:
        ids = [item.id for item in self.get_lists() if item.title == title]
        return min(ids) if ids else None

    def get_fields(self) -> list[ContactField]:
        """All user fields of the account."""
        result = self.call("getFields")
        return [ContactField.model_validate(item) for item in _as_list(result, "getFields")]

    def create_field(
        self, name: str, type: str = "string", *, public_name: str | None = None
    ) -> int:
        """Create a user field; `name` becomes the importContacts column (case-sensitive)."""
        params = {"name": name, "type": type, "public_name": public_name}
        return _id_of(self.call("createField", params), "createField")

    def ensure_field(self, name: str, type: str = "string") -> int:
        """Id of the user field with exactly this name, created only if absent."""
        found = self._find_field(name)
        if found is not None:
            return found
        try:
            return self.create_field(name, type)
        except _NOT_A_DUPLICATE:
            raise
        except UnisenderError:
            found = self._find_field(name)
            if found is None:
                raise
            return found

    def _find_field(self, name: str) -> int | None:
        return next((f.id for f in self.get_fields() if f.name == name), None)

    def import_contacts(
        self,
        rows: Iterable[ImportRow],
        *,
        list_id: int | None = None,
        name_field: str = "Name",
    ) -> ImportResult:
        """Upsert rows by email in importContacts calls of at most `batch_size` rows."""
        # Last row wins for a repeated email, so one address is never in two calls of one import.
        unique: dict[str, ImportRow] = {}
        for row in rows:
            unique.pop(row.email, None)
            unique[row.email] = row
        # Whether an empty cell clears a stored value is [unverified]: never send one. Rows are
        # grouped by the set of columns they actually have, so every call is rectangular.
        groups: dict[tuple[str, ...], list[tuple[str, list[str]]]] = {}
        for row in unique.values():
            cells = _row_cells(row, list_id=list_id, name_field=name_field)
            groups.setdefault(tuple(cells), []).append((row.email, list(cells.values())))

        chunks = [
            (columns, entries[start : start + self.batch_size])
            for columns, entries in groups.items()
            for start in range(0, len(entries), self.batch_size)
        ]
        totals: Counter[str] = Counter()
        row_errors: list[RowError] = []
        row_warnings: list[RowError] = []
        sizes: list[int] = []
        for columns, chunk in chunks:
            part = self._import_chunk(columns, chunk)
            for name in ("total", "inserted", "updated", "deleted", "new_emails", "invalid"):
                totals[name] += getattr(part, name)
            errors, warnings = _map_log(part, chunk)
            row_errors.extend(errors)
            row_warnings.extend(warnings)
            sizes.append(len(chunk))
        return ImportResult(
            total=totals["total"],
            inserted=totals["inserted"],
            updated=totals["updated"],
            deleted=totals["deleted"],
            new_emails=totals["new_emails"],
            invalid=totals["invalid"],
            row_errors=row_errors,
            row_warnings=row_warnings,
            calls=len(sizes),
            chunk_sizes=sizes,
        )

    def _import_chunk(
        self, columns: Sequence[str], chunk: Sequence[tuple[str, list[str]]]
    ) -> ImportChunkResult:
        params = {"field_names": list(columns), "data": [values for _, values in chunk]}
        # Upserts keyed by email are safe to repeat after a lost answer.
        attempts = min(self.max_attempts, IMPORT_MAX_ATTEMPTS)
        result = self.call("importContacts", params, max_attempts=attempts)
        if not isinstance(result, Mapping):
            raise Transient("importContacts result is not an object", method="importContacts")
        return ImportChunkResult.model_validate(result)

    def exclude(self, email: str, list_ids: Iterable[int]) -> bool:
        """Remove an address from lists without unsubscribing it; False if it was not there."""
        ids = join_ids(list_ids)
        if not ids:
            # Without list_ids Unisender excludes from every list of the account, including
            # lists amosync does not manage.
            raise ValueError("exclude needs at least one list id")
        params = {"contact_type": "email", "contact": canonical_email(email), "list_ids": ids}
        try:
            self.call("exclude", params)
        except NotFound:
            return False  # 'Contact "x" not found': already out of the list, nothing to do
        return True

    def exclude_from_list(self, emails: Iterable[str], list_id: int) -> ImportResult:
        """Remove addresses from one list in importContacts calls of ≤500 rows, not one call each.

        Each row is `email` + `email_excluded_list_ids=<list_id>`: removal from our list only.
        Not the `delete` column: whether `delete=1` removes the contact from the list or from the
        whole account is ambiguous in the docs (reference §3), and the account may hold lists
        amosync does not manage. Like `exclude`, this does not mark anyone unsubscribed.
        """
        rows = [ImportRow(email=e, excluded_list_ids=(list_id,)) for e in emails]
        return self.import_contacts(rows, list_id=None) if rows else ImportResult()

    def export_list_statuses(
        self,
        list_id: int | None,
        *,
        notify_url: str,
        email_status: str | None = None,
        wait_seconds: float = 300.0,
        keep_alive: Callable[[], None] | None = None,
    ) -> dict[str, ListStatus] | None:
        """Every address of the list with its statuses, read in one export (not one call each).

        `list_id=None` with `email_status` reads the whole account's addresses in that status
        (e.g. everyone unsubscribed account-wide, who is on no list of ours).

        `async/exportContacts` plus `async/getTaskResult` polls (the export's own limit is 20
        calls a minute, so callers read it once and reuse it); the legacy synchronous
        `exportContacts` (1,000 rows a call) only when the async method is unknown. None when the
        service refuses the status columns ([unverified] names): the caller must then ask per
        address. `notify_url` is required by the EN docs; we poll, so nothing needs to answer it.
        """
        params: dict[str, object] = {"field_names": list(STATUS_COLUMNS)}
        if list_id is not None:
            params["list_id"] = list_id
        if email_status is not None:
            params["email_status"] = email_status
        try:
            task = self.call("async/exportContacts", {**params, "notify_url": notify_url})
        except UnknownMethod:
            return self._export_legacy(params)
        except InvalidArgument:
            return None
        if not isinstance(task, Mapping) or not task.get("task_uuid"):
            raise Transient("export task has no task_uuid", method="async/exportContacts")
        url = self._await_export(str(task["task_uuid"]), wait_seconds, keep_alive)
        return _statuses(self._download(url))

    def _export_legacy(self, params: Mapping[str, object]) -> dict[str, ListStatus] | None:
        rows: list[dict[str, str]] = []
        offset = 0
        while True:
            try:
                page = self.call(
                    "exportContacts", {**params, "offset": offset, "limit": EXPORT_PAGE_LIMIT}
                )
            except InvalidArgument:
                return None
            if not isinstance(page, Mapping):
                raise Transient("export result is not an object", method="exportContacts")
            names = [str(n) for n in page.get("field_names") or ()]
            data = list(page.get("data") or ())
            rows.extend(dict(zip(names, (str(v) for v in values), strict=False)) for values in data)
            if len(data) < EXPORT_PAGE_LIMIT:
                return _statuses(rows)
            offset += len(data)

    def _await_export(
        self, task_uuid: str, wait_seconds: float, keep_alive: Callable[[], None] | None
    ) -> str:
        deadline = time.monotonic() + wait_seconds
        delay = 1.0
        while True:
            # The task is never done at once: the first poll waits too.
            self._sleep(delay)
            if keep_alive is not None:
                keep_alive()
            result = self.call("async/getTaskResult", {"task_uuid": task_uuid})
            if isinstance(result, Mapping) and result.get("file_to_download"):
                return str(result["file_to_download"])
            if time.monotonic() + delay > deadline:
                raise Transient("export task not finished in time", method="async/getTaskResult")
            delay = min(delay * 1.5, 10.0)

    def _download(self, url: str) -> list[dict[str, str]]:
        # The file URL is not an API call and carries no key; it is still never logged (it may
        # hold a token of its own).
        try:
            response = self._session.get(
                url, timeout=self.timeout, headers={"User-Agent": USER_AGENT}
            )
        except requests.RequestException as exc:
            raise Transient(
                f"export download failed: {type(exc).__name__}", code="connection"
            ) from exc
        if not 200 <= response.status_code < 300:
            raise Transient(
                f"export download: HTTP {response.status_code}",
                code=f"http_{response.status_code}",
            )
        response.encoding = response.encoding or "utf-8"
        return list(csv.DictReader(io.StringIO(response.text)))

    def get_contact(
        self,
        email: str,
        *,
        include_lists: bool = True,
        include_fields: bool = True,
        include_details: bool = False,
    ) -> UnisenderContact | None:
        """The contact with this address, or None if Unisender does not know it."""
        params = {
            "email": canonical_email(email),
            "include_lists": include_lists,
            "include_fields": include_fields,
            "include_details": include_details,
        }
        try:
            result = self.call("getContact", params)
        except (NotFound, InvalidArgument) as exc:
            # The unknown-email answer is [unverified]. Only an error that says "not found" reads
            # as "no such contact"; anything else (bad key, outage, other invalid_arg) raises, so
            # a failure is never shown as an absent contact.
            if isinstance(exc, NotFound) or "not found" in exc.message.lower():
                return None
            raise
        if not isinstance(result, Mapping):
            return None  # an empty result ("" or []) also means nothing is known
        return UnisenderContact.from_result(result)

    def is_contact_in_lists(
        self, email: str, list_ids: Iterable[int], *, condition: str = "or"
    ) -> bool:
        """Whether the address is in any (`or`) or all (`and`) of the lists."""
        params = {"email": canonical_email(email), "list_ids": join_ids(list_ids)}
        result = self.call("isContactInLists", {**params, "condition": condition})
        return result in (True, 1, "1", "true")


def _row_cells(row: ImportRow, *, list_id: int | None, name_field: str) -> dict[str, str]:
    cells = {"email": row.email}
    if row.delete:
        cells["delete"] = "1"
        return cells
    # `email_status` is deliberately never sent: for a new address Unisender defaults it to `new`,
    # and for an existing one we must not touch it, so people who unsubscribed stay unsubscribed.
    if row.name is not None:
        cells[name_field] = row.name.strip()[:MAX_VALUE_LENGTH]
    for key in sorted(row.fields):
        if key in SYSTEM_COLUMNS or key == name_field:
            raise ValueError(f"{key!r} is not a user field")
        cells[key] = row.fields[key][:MAX_VALUE_LENGTH]
    subscribe = [*row.list_ids, *([list_id] if list_id is not None else [])]
    if subscribe:
        cells["email_list_ids"] = join_ids(subscribe)
    if row.excluded_list_ids:
        cells["email_excluded_list_ids"] = join_ids(row.excluded_list_ids)
    return cells


# importContacts `log` entries are "per-row errors/warnings" (reference §3) and their codes are
# undocumented. A warning's row is imported (counted in inserted/updated, not in `invalid`), so it
# must not be taken for a failure: the address would be left on the list by later deletes. These
# codes are warnings wherever they appear; any entry of a call that reports no `invalid` row is one.
WARNING_CODES = frozenset({"status_not_changed", "list_unsubscribed"})


def _map_log(
    part: ImportChunkResult, chunk: Sequence[tuple[str, list[str]]]
) -> tuple[list[RowError], list[RowError]]:
    """The call's `log` mapped back to emails: (rows that failed, rows imported with a warning)."""
    errors: list[RowError] = []
    warnings: list[RowError] = []
    for entry in part.log:
        if 0 <= entry.index < len(chunk):
            email = chunk[entry.index][0]
        else:
            log.warning("importContacts log index out of range", extra={"index": entry.index})
            email = f"<row {entry.index}>"
        row = RowError(email=email, code=entry.code, message=entry.message)
        if entry.code in WARNING_CODES or part.invalid == 0:
            warnings.append(row)
        else:
            errors.append(row)
    return errors, warnings


def _statuses(rows: Iterable[Mapping[str, str]]) -> dict[str, ListStatus]:
    """Export rows by address; a row without an email (a phone-only contact) is skipped."""
    found: dict[str, ListStatus] = {}
    for row in rows:
        if not (row.get("email") or "").strip():
            continue
        status = ListStatus.model_validate(
            {
                "email": row["email"],
                "status": row.get("email_status") or "",
                "list_ids": row.get("email_list_ids") or "",
                "unsubscribed_list_ids": row.get("email_unsubscribed_list_ids") or "",
            }
        )
        found[status.email] = status
    return found


def _as_list(result: object, method: str) -> list[Any]:
    if result in (None, "", {}):
        return []
    if isinstance(result, Mapping):
        return list(result.values())  # PHP may serialize a sparse array as an object
    if not isinstance(result, list):
        raise Transient("result is not a list", code="invalid_json", method=method)
    return result


def _id_of(result: object, method: str) -> int:
    if isinstance(result, Mapping):
        value = result.get("id")
        try:
            return int(str(value).strip())
        except ValueError:
            pass
    raise Transient("result has no id", code="invalid_json", method=method)
