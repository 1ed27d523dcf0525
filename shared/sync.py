"""Applying amoCRM contact states to an account's Unisender list: the one diff both syncs use.

The database keeps two views per account: `contacts`/`contact_emails` (what amoCRM last told us)
and `list_members` (what we last did in Unisender per address). A batch of states is diffed
against both, Unisender is called, and only then are both views written in one transaction: a
crash or a transient failure in between leaves the old views, so the retry computes the same
plan again (imports are upserts and excludes are idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.db import Database
from shared.queue import RetryJob
from shared.unisender.client import UnisenderClient
from shared.unisender.models import ImportRow

log = logging.getLogger(__name__)

# list_members.state values.
MEMBER = "member"
FAILED = "failed"
EXCLUDED = "excluded"

_CHUNK = 500  # rows per IN (...) query
LOCK_TIMEOUT_SECONDS = 30.0


class AccountBusy(RetryJob):
    """Another process is applying changes to this account's list; try again shortly."""

    def __init__(self, account_id: int) -> None:
        super().__init__(f"account {account_id} list is busy", delay=2)


@dataclass(frozen=True)
class ContactState:
    """A contact as amoCRM has it now; `emails` already went through shared.contacts rules."""

    contact_id: int
    name: str
    updated_at: int
    emails: list[str]
    deleted: bool = False


@dataclass
class ApplyResult:
    """What one apply did (sync runs and logs add these up)."""

    rows_imported: int = 0
    emails_excluded: int = 0
    row_errors: int = 0
    import_calls: int = 0
    unchanged: int = 0
    stale: int = 0
    contacts_applied: int = 0
    failed_emails: dict[str, str] = field(default_factory=dict)


@dataclass
class _Member:
    state: str
    name_sent: str | None


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in(n: int) -> str:
    return ", ".join(["%s"] * n)


def newest_states(states: Iterable[ContactState]) -> list[ContactState]:
    """One state per contact: the newest `updated_at` wins, a later one wins a tie."""
    by_id: dict[int, ContactState] = {}
    for state in states:
        current = by_id.get(state.contact_id)
        if current is None or state.updated_at >= current.updated_at:
            by_id[state.contact_id] = state
    return list(by_id.values())


def apply_contact_states(
    db: Database,
    client: UnisenderClient,
    *,
    account_id: int,
    list_id: int,
    states: Iterable[ContactState],
    run_id: int | None = None,
    force_import: bool = False,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    keep_alive: Callable[[], None] | None = None,
) -> ApplyResult:
    """Bring the account's list in line with these contact states (see the module docstring).

    `force_import` re-imports every wanted address even when list_members says it is there
    (a full reconcile that distrusts our own bookkeeping). Raises AccountBusy when another
    process holds the account's list lock, and Unisender errors as they come.
    """
    with db.named_lock(f"amosync:list:{account_id}", timeout=lock_timeout) as acquired:
        if not acquired:
            raise AccountBusy(account_id)
        return _apply(
            db,
            client,
            account_id=account_id,
            list_id=list_id,
            states=newest_states(states),
            run_id=run_id,
            force_import=force_import,
            keep_alive=keep_alive or (lambda: None),
        )


def _apply(
    db: Database,
    client: UnisenderClient,
    *,
    account_id: int,
    list_id: int,
    states: list[ContactState],
    run_id: int | None,
    force_import: bool,
    keep_alive: Callable[[], None],
) -> ApplyResult:
    result = ApplyResult()
    if not states:
        return result
    ids = [s.contact_id for s in states]
    stored = _stored_contacts(db, account_id, ids)
    fresh: list[ContactState] = []
    for state in states:
        known = stored.get(state.contact_id)
        # An event older than what we hold must not overwrite newer state (webhooks arrive out
        # of order and amoCRM retries late).
        if known is not None and state.updated_at < known["amo_updated_at"]:
            result.stale += 1
            continue
        fresh.append(state)
    if not fresh:
        result.unchanged = result.stale
        _mark_seen(db, account_id, ids, run_id)
        return result

    fresh_ids = {s.contact_id for s in fresh}
    old_emails = _stored_emails(db, account_id, list(fresh_ids))
    new_emails = {s.contact_id: ([] if s.deleted else list(s.emails)) for s in fresh}
    candidates = sorted(
        {e for es in old_emails.values() for e in es}
        | {e for es in new_emails.values() for e in es}
    )
    # Who holds each candidate address after this batch: other contacts of the SAME account as
    # stored, plus this batch's contacts as they are now.
    holders = {email: set[int]() for email in candidates}
    for contact_id, email in _holders(db, account_id, candidates):
        if contact_id not in fresh_ids:
            holders[email].add(contact_id)
    wanted_name: dict[str, str] = {}
    for state in fresh:
        for email in new_emails[state.contact_id]:
            holders[email].add(state.contact_id)
            wanted_name[email] = state.name.strip()[:255]
    members = _members(db, account_id, candidates)
    outside_names = _names(
        db,
        account_id,
        sorted({next(iter(h)) for e, h in holders.items() if h and e not in wanted_name}),
    )

    to_import: list[ImportRow] = []
    to_exclude: list[str] = []
    quiet_exclude: list[str] = []
    for email in candidates:
        member = members.get(email)
        if holders[email]:
            name = wanted_name.get(email)
            if name is None:
                # Still held only by a contact outside this batch: nothing of ours changed it.
                if member is not None and member.state in (MEMBER, FAILED):
                    continue
                name = outside_names.get(next(iter(holders[email])), "")
            if (
                not force_import
                and member is not None
                and member.state in (MEMBER, FAILED)
                and (member.name_sent or "") == name
            ):
                continue
            to_import.append(ImportRow(email=email, name=name or None))
        elif member is None or member.state == MEMBER:
            to_exclude.append(email)
        elif member.state == FAILED:
            quiet_exclude.append(email)  # never reached the list: nothing to call

    failed: dict[str, tuple[str, str]] = {}
    if to_import:
        imported = client.import_contacts(to_import, list_id=list_id)
        result.import_calls = imported.calls
        failed = {e.email: (e.code, e.message) for e in imported.row_errors}
    keep_alive()
    excluded = 0
    for email in to_exclude:
        if client.exclude(email, [list_id]):
            excluded += 1
        keep_alive()

    result.rows_imported = len(to_import) - len(failed)
    result.row_errors = len(failed)
    result.failed_emails = {email: code for email, (code, _) in failed.items()}
    result.emails_excluded = excluded
    result.contacts_applied = len(fresh)
    result.unchanged = result.stale + sum(
        1
        for s in fresh
        if s.contact_id in stored
        and set(old_emails.get(s.contact_id, ())) == set(new_emails[s.contact_id])
        and stored[s.contact_id]["name"] == s.name.strip()[:255]
        and bool(stored[s.contact_id]["is_deleted"]) == s.deleted
    )

    with db.transaction() as cur:
        cur.executemany(
            "INSERT INTO contacts (account_id, contact_id, name, amo_updated_at, is_deleted, "
            "seen_in_run) VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
            "name = VALUES(name), amo_updated_at = VALUES(amo_updated_at), "
            "is_deleted = VALUES(is_deleted), seen_in_run = COALESCE(VALUES(seen_in_run), "
            "seen_in_run)",
            [
                (account_id, s.contact_id, s.name.strip()[:255], s.updated_at, s.deleted, run_id)
                for s in fresh
            ],
        )
        removed = [
            (account_id, cid, email)
            for cid, emails in old_emails.items()
            for email in emails
            if email not in new_emails.get(cid, [])
        ]
        if removed:
            cur.executemany(
                "DELETE FROM contact_emails WHERE account_id = %s AND contact_id = %s "
                "AND email = %s",
                removed,
            )
        added = [
            (account_id, cid, email)
            for cid, emails in new_emails.items()
            for email in emails
            if email not in old_emails.get(cid, [])
        ]
        if added:
            cur.executemany(
                "INSERT IGNORE INTO contact_emails (account_id, contact_id, email) "
                "VALUES (%s, %s, %s)",
                added,
            )
        member_rows: list[tuple[int, str, str, str | None, str | None, str | None]] = []
        for row in to_import:
            name_sent = row.name or ""
            if row.email in failed:
                code, message = failed[row.email]
                member_rows.append(
                    (account_id, row.email, FAILED, name_sent, code[:100], message[:1000])
                )
            else:
                member_rows.append((account_id, row.email, MEMBER, name_sent, None, None))
        for email in [*to_exclude, *quiet_exclude]:
            member_rows.append((account_id, email, EXCLUDED, None, None, None))
        if member_rows:
            cur.executemany(
                "INSERT INTO list_members (account_id, email, state, name_sent, error_code, "
                "error_message) VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "state = VALUES(state), name_sent = VALUES(name_sent), "
                "error_code = VALUES(error_code), error_message = VALUES(error_message)",
                member_rows,
            )
    if run_id is not None:
        stale_ids = [s for s in ids if s not in fresh_ids]
        _mark_seen(db, account_id, stale_ids, run_id)
    if failed:
        log.warning(
            "Unisender refused rows",
            extra={
                "account_id": account_id,
                "rows": len(failed),
                "codes": sorted({code for code, _ in failed.values()}),
            },
        )
    log.info(
        "contact states applied",
        extra={
            "account_id": account_id,
            "contacts": len(fresh),
            "stale": result.stale,
            "imported": result.rows_imported,
            "excluded": excluded,
            "import_calls": result.import_calls,
        },
    )
    return result


def _fetch_in(
    db: Database, select: str, column: str, account_id: int, values: Sequence[Any]
) -> list[dict[str, Any]]:
    """Rows of `select` for the account where `column` is one of `values`, in IN-chunks."""
    rows: list[dict[str, Any]] = []
    for part in _chunks(values):
        # Only our own constant SQL and "%s" placeholders are interpolated; values are bound.
        sql = f"{select} WHERE account_id = %s AND {column} IN ({_in(len(part))})"
        rows.extend(db.fetch_all(sql, (account_id, *part)))
    return rows


def _stored_contacts(db: Database, account_id: int, ids: list[int]) -> dict[int, dict[str, Any]]:
    rows = _fetch_in(
        db,
        "SELECT contact_id, name, amo_updated_at, is_deleted FROM contacts",
        "contact_id",
        account_id,
        ids,
    )
    return {int(row["contact_id"]): row for row in rows}


def _stored_emails(db: Database, account_id: int, ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    sql = "SELECT contact_id, email FROM contact_emails"
    for row in _fetch_in(db, sql, "contact_id", account_id, ids):
        out.setdefault(int(row["contact_id"]), []).append(str(row["email"]))
    return out


def _holders(db: Database, account_id: int, emails: list[str]) -> list[tuple[int, str]]:
    sql = "SELECT contact_id, email FROM contact_emails"
    rows = _fetch_in(db, sql, "email", account_id, emails)
    return [(int(r["contact_id"]), str(r["email"])) for r in rows]


def _members(db: Database, account_id: int, emails: list[str]) -> dict[str, _Member]:
    sql = "SELECT email, state, name_sent FROM list_members"
    rows = _fetch_in(db, sql, "email", account_id, emails)
    return {str(r["email"]): _Member(str(r["state"]), r["name_sent"]) for r in rows}


def _names(db: Database, account_id: int, ids: list[int]) -> dict[int, str]:
    rows = _fetch_in(db, "SELECT contact_id, name FROM contacts", "contact_id", account_id, ids)
    return {int(r["contact_id"]): str(r["name"]) for r in rows}


def _mark_seen(db: Database, account_id: int, ids: list[int], run_id: int | None) -> None:
    if run_id is None or not ids:
        return
    for part in _chunks(ids):
        db.execute(
            "UPDATE contacts SET seen_in_run = %s "  # noqa: S608 - placeholders only
            f"WHERE account_id = %s AND contact_id IN ({_in(len(part))})",
            (run_id, account_id, *part),
        )
