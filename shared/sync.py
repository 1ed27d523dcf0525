"""Applying amoCRM contact states to an account's Unisender list: the one diff both syncs use.

The database keeps two views per account: `contacts`/`contact_emails` (what amoCRM last told us)
and `list_members` (what we last did in Unisender per address). A batch of states is diffed
against both, Unisender is called, and only then are both views written in one transaction: a
crash or a transient failure in between leaves the old views, so the retry computes the same
plan again (imports are upserts and excludes are idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from shared.amocrm.models import Contact
from shared.contacts import contact_display_name, normalize_name, select_emails
from shared.db import Database, Row
from shared.jobqueue import RetryJob
from shared.settings import get_settings
from shared.unisender.client import UnisenderClient
from shared.unisender.models import ImportRow, ListStatus

log = logging.getLogger(__name__)

# list_members.state values.
MEMBER = "member"
FAILED = "failed"
EXCLUDED = "excluded"
# The person unsubscribed (account-wide or from our list): never imported or excluded again.
# It is the suppression record: only Unisender's statuses write it, and no later import
# decision overwrites it (see `_write_views`); it survives a reconnect (shared.unisender_link).
UNSUBSCRIBED = "unsubscribed"
# Import `log` code of a row whose address is unsubscribed from a list in its `email_list_ids`
# (the emulator's name; the real codes are undocumented): a status, recorded as UNSUBSCRIBED.
LIST_UNSUBSCRIBED_WARNING = "list_unsubscribed"

# Up to this many addresses to check, one getContact each (fresh, and a webhook's few addresses
# cost a few calls); more, and the list's statuses are read once with an export (≈3 calls
# whatever the size) and reused for STATUS_MAX_AGE_SECONDS (exports: 20 calls a minute).
SMALL_CHECK = 20
STATUS_MAX_AGE_SECONDS = 300.0

IN_CHUNK = 500  # values per IN (...) query
LOCK_TIMEOUT_SECONDS = 30.0


class AccountBusy(RetryJob):
    """Another process is applying changes to this account's list; try again shortly."""

    def __init__(self, account_id: int) -> None:
        super().__init__(f"account {account_id} list is busy", delay=2)


@dataclass(frozen=True)
class ContactState:
    """A contact as amoCRM has it now; `emails` already went through shared.contacts rules.

    The name is normalized here, once (trimmed, at most 255 characters). `received_at` is when
    we learned this state (the webhook job's receipt, or the amoCRM read); `authoritative`
    marks a state read from amoCRM's API just now (full-sync listing, get_contact);
    `synthetic_time` marks an `updated_at` we had to guess (a deletion amoCRM did not date).
    """

    contact_id: int
    name: str
    updated_at: int
    emails: list[str]
    deleted: bool = False
    received_at: float = 0.0
    authoritative: bool = False
    synthetic_time: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))

    @property
    def version(self) -> tuple[float, ...]:
        """Ordering of two states of one contact: the greater is the newer.

        amoCRM's `updated_at` has one-second resolution; two changes within a second are told
        apart by when we received them (later wins).
        """
        return (self.updated_at, self.received_at)


def state_from_contact(
    contact: Contact,
    *,
    enum_codes: Mapping[int, str] | None,
    allowed_types: set[str] | None,
    received_at: float,
    not_before: int = 0,
) -> ContactState:
    """A contact just read from amoCRM's API as the state to apply: the one mapping.

    Every path that reads a contact back (full sync, reconcile, restore) goes through here, so
    they agree on its name and addresses and a later run never sees a change that is not there.
    `not_before` is the time of the event that made us read it (a restore stamped later than the
    contact's own `updated_at`).
    """
    return ContactState(
        contact_id=contact.id,
        name=contact_display_name(contact.name, contact.first_name, contact.last_name),
        updated_at=max(not_before, contact.updated_at),
        emails=select_emails(
            contact.email_values(), enum_codes=enum_codes, allowed_types=allowed_types
        ),
        deleted=contact.is_deleted,
        received_at=received_at,
        authoritative=True,
    )


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
    unsubscribed: int = 0


@dataclass(frozen=True)
class StoredContact:
    """What amoCRM last told us about a contact (`contacts` row)."""

    name: str
    updated_at: int
    deleted: bool
    received_at: float = 0.0
    deleted_synthetic: bool = False

    @property
    def version(self) -> tuple[float, ...]:
        return (self.updated_at, self.received_at)


@dataclass(frozen=True)
class ListMember:
    """What we last did in the list for one address (`list_members` row)."""

    state: str
    name_sent: str | None


@dataclass
class Snapshot:
    """Everything plan_changes needs from the database, read before any Unisender call."""

    contacts: dict[int, StoredContact] = field(default_factory=dict)
    emails: dict[int, list[str]] = field(default_factory=dict)  # of the batch's contacts
    holders: dict[str, set[int]] = field(default_factory=dict)  # other contacts per address
    members: dict[str, ListMember] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # of those other holders


@dataclass
class Plan:
    """What to do in Unisender and to our two views for one batch of states."""

    fresh: list[ContactState] = field(default_factory=list)
    stale: int = 0
    unchanged: int = 0
    old_emails: dict[int, list[str]] = field(default_factory=dict)
    new_emails: dict[int, list[str]] = field(default_factory=dict)
    to_import: list[ImportRow] = field(default_factory=list)
    # Rows of addresses already on the list (a changed name): sent WITHOUT our list id, so the
    # row can never put back someone who unsubscribed from the list since ([unverified] whether a
    # re-imported list id clears a per-list unsubscribe; reference §3).
    update_only: set[str] = field(default_factory=set)
    to_exclude: list[str] = field(default_factory=list)
    quiet_exclude: list[str] = field(default_factory=list)  # never reached the list
    # Imports that join the list for an address we do not hold as a member (new to us, or
    # excluded earlier): the person may have unsubscribed meanwhile, so Unisender is asked first.
    recheck: list[str] = field(default_factory=list)
    # Removals of addresses we put on the list ourselves (a status snapshot older than our own
    # import may not show them yet).
    ours: set[str] = field(default_factory=set)
    unsubscribed: list[str] = field(default_factory=list)  # found opted out when applied


class Versioned(Protocol):
    """A contact's state or event that newest_per_contact can order."""

    @property
    def contact_id(self) -> int: ...

    @property
    def version(self) -> tuple[float, ...]: ...


V = TypeVar("V", bound=Versioned)


def newest_per_contact(items: Iterable[V]) -> list[V]:
    """One item per contact: the greatest `version` wins; on a tie the later one."""
    by_id: dict[int, V] = {}
    for item in items:
        current = by_id.get(item.contact_id)
        if current is None or item.version >= current.version:
            by_id[item.contact_id] = item
    return list(by_id.values())


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def fetch_in(
    db: Database, select: str, column: str, account_id: int, values: Sequence[Any]
) -> list[Row]:
    """Rows of `select` for the account where `column` is one of `values`, in bounded IN-chunks."""
    rows: list[Row] = []
    for part in chunks(values):
        # Only our own constant SQL and "%s" placeholders are interpolated; values are bound.
        sql = f"{select} WHERE account_id = %s AND {column} IN ({placeholders(len(part))})"
        rows.extend(db.fetch_all(sql, (account_id, *part)))
    return rows


def apply_contact_states(
    db: Database,
    client: UnisenderClient,
    *,
    account_id: int,
    list_id: int,
    states: Iterable[ContactState],
    run_id: int | None = None,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    keep_alive: Callable[[], None] | None = None,
    statuses: ListStatuses | None = None,
) -> ApplyResult:
    """Bring the account's list in line with these contact states (see the module docstring).

    Raises AccountBusy when another process holds the account's list lock, and Unisender
    errors as they come. `keep_alive` is called between Unisender calls (job TTR). `statuses`
    lets a caller share one status reader (and its export) across many applies.
    """
    with db.named_lock(f"amosync:list:{account_id}", timeout=lock_timeout) as acquired:
        if not acquired:
            raise AccountBusy(account_id)
        batch = newest_per_contact(states)
        if not batch:
            return ApplyResult()
        plan = plan_changes(batch, read_snapshot(db, account_id, batch))
        return _execute(
            db,
            client,
            plan,
            account_id=account_id,
            list_id=list_id,
            run_id=run_id,
            batch_ids=[s.contact_id for s in batch],
            keep_alive=keep_alive or (lambda: None),
            statuses=statuses or ListStatuses(client, list_id),
        )


def read_snapshot(db: Database, account_id: int, states: Sequence[ContactState]) -> Snapshot:
    """Our two views of the account as far as these states can touch them."""
    ids = [s.contact_id for s in states]
    snapshot = Snapshot()
    for row in fetch_in(
        db,
        "SELECT contact_id, name, amo_updated_at, received_at, is_deleted, deleted_synthetic "
        "FROM contacts",
        "contact_id",
        account_id,
        ids,
    ):
        snapshot.contacts[int(row["contact_id"])] = StoredContact(
            name=str(row["name"]),
            updated_at=int(row["amo_updated_at"]),
            deleted=bool(row["is_deleted"]),
            received_at=float(row["received_at"]),
            deleted_synthetic=bool(row["deleted_synthetic"]),
        )
    sql = "SELECT contact_id, email FROM contact_emails"
    for row in fetch_in(db, sql, "contact_id", account_id, ids):
        snapshot.emails.setdefault(int(row["contact_id"]), []).append(str(row["email"]))
    candidates = sorted(
        {e for es in snapshot.emails.values() for e in es} | {e for s in states for e in s.emails}
    )
    in_batch = set(ids)
    snapshot.holders = {email: set() for email in candidates}
    for row in fetch_in(db, sql, "email", account_id, candidates):
        if int(row["contact_id"]) not in in_batch:
            snapshot.holders[str(row["email"])].add(int(row["contact_id"]))
    sql = "SELECT email, state, name_sent FROM list_members"
    for row in fetch_in(db, sql, "email", account_id, candidates):
        snapshot.members[str(row["email"])] = ListMember(str(row["state"]), row["name_sent"])
    first_holders = sorted({min(h) for h in snapshot.holders.values() if h})
    sql = "SELECT contact_id, name FROM contacts"
    for row in fetch_in(db, sql, "contact_id", account_id, first_holders):
        snapshot.names[int(row["contact_id"])] = str(row["name"])
    return snapshot


def overrides_deletion(state: ContactState, known: StoredContact) -> bool:
    """Whether an amoCRM read showing the contact alive beats a deletion we dated ourselves.

    A delete webhook carries no time, so it is stored at its receipt time, and a reconcile
    that guesses a deletion stores "now": both can be later than amoCRM's `updated_at` of a
    restore or of the live contact, which would then be ignored as stale forever. A read made
    after we recorded the deletion (read time ≥ its synthetic time) sees the truth.
    """
    return (
        state.authoritative
        and not state.deleted
        and known.deleted
        and known.deleted_synthetic
        and state.received_at >= known.updated_at
    )


def plan_changes(states: Sequence[ContactState], snapshot: Snapshot) -> Plan:
    """The diff of one batch (one state per contact) against our views; pure, no I/O."""
    plan = Plan()
    for state in states:
        known = snapshot.contacts.get(state.contact_id)
        if known is None or overrides_deletion(state, known) or state.version >= known.version:
            plan.fresh.append(state)
        else:
            # Older than what we hold: webhooks arrive out of order and amoCRM retries late.
            plan.stale += 1
    plan.unchanged = plan.stale
    if not plan.fresh:
        return plan

    fresh_ids = {s.contact_id for s in plan.fresh}
    plan.old_emails = {cid: es for cid, es in snapshot.emails.items() if cid in fresh_ids}
    plan.new_emails = {s.contact_id: ([] if s.deleted else list(s.emails)) for s in plan.fresh}
    candidates = sorted(
        {e for es in plan.old_emails.values() for e in es}
        | {e for es in plan.new_emails.values() for e in es}
    )
    # Who holds each candidate address after this batch: other contacts of the SAME account as
    # stored (stale states of this batch count with what we hold for them), plus this batch's
    # fresh contacts as they are now.
    holders = {email: set(snapshot.holders.get(email, ())) for email in candidates}
    for cid, emails in snapshot.emails.items():
        if cid not in fresh_ids:
            for email in emails:
                if email in holders:
                    holders[email].add(cid)
    wanted_name: dict[str, str] = {}
    for state in plan.fresh:
        for email in plan.new_emails[state.contact_id]:
            holders[email].add(state.contact_id)
            wanted_name[email] = state.name

    for email in candidates:
        member = snapshot.members.get(email)
        if member is not None and member.state == UNSUBSCRIBED:
            continue  # their choice stands whatever amoCRM says
        if holders[email]:
            name = wanted_name.get(email)
            if name is None:
                # Still held only by a contact outside this batch: nothing of ours changed it.
                if member is not None and member.state in (MEMBER, FAILED):
                    continue
                name = _holder_name(snapshot, min(holders[email]))
            if (
                member is not None
                and member.state in (MEMBER, FAILED)
                and (member.name_sent or "") == name
            ):
                continue
            plan.to_import.append(ImportRow(email=email, name=name or None))
            if member is not None and member.state == MEMBER:
                plan.update_only.add(email)
            elif member is None or member.state == EXCLUDED:
                plan.recheck.append(email)
        elif member is None or member.state == MEMBER:
            plan.to_exclude.append(email)
            if member is not None:
                plan.ours.add(email)
        elif member.state == FAILED:
            plan.quiet_exclude.append(email)

    for state in plan.fresh:
        known = snapshot.contacts.get(state.contact_id)
        if (
            known is not None
            and set(plan.old_emails.get(state.contact_id, ()))
            == set(plan.new_emails[state.contact_id])
            and known.name == state.name
            and known.deleted == state.deleted
        ):
            plan.unchanged += 1
    return plan


@dataclass(frozen=True)
class Lookup:
    """Statuses of some addresses: None where Unisender has no such contact (getContact) or the
    address is not on the list (export).

    `snapshot` marks answers from a list export, which can be older than our own latest
    imports; getContact answers are fresh. A person who unsubscribes after the export is missed
    by removals for at most STATUS_MAX_AGE_SECONDS; a later re-import asks again (`recheck`).
    """

    statuses: dict[str, ListStatus | None]
    snapshot: bool


class ListStatuses:
    """Who is on the list and who opted out, asked as cheaply as the number of addresses allows.

    One per apply by default; a full-sync run keeps one for the whole run, so its removals and
    imports share one export instead of one per batch.
    """

    def __init__(
        self,
        client: UnisenderClient,
        list_id: int,
        *,
        notify_url: str | None = None,
        small: int = SMALL_CHECK,
        max_age: float = STATUS_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.list_id = list_id
        # We poll the export task; the URL only has to be one of ours (required by the docs).
        self.notify_url = notify_url or get_settings().public_url
        self.small = small
        self.max_age = max_age
        self._clock = clock
        self._snapshot: dict[str, ListStatus] | None = None
        self._taken_at = 0.0
        self._opted_out: dict[str, ListStatus] | None = None  # account-wide, on no list of ours
        self._opted_out_at = 0.0
        self._no_export = False

    def lookup(
        self, emails: Sequence[str], keep_alive: Callable[[], None], *, joining: bool = False
    ) -> Lookup:
        """Statuses of these addresses. `joining`: they are about to be put on the list, so an
        address the list export lacks is also looked up among the account-wide unsubscribed
        (a second export, read only when some address needs it)."""
        wanted = list(dict.fromkeys(emails))
        if not wanted:
            return Lookup({}, snapshot=False)
        if len(wanted) > self.small and not self._no_export:
            snapshot = self._fresh_snapshot(keep_alive)
            if snapshot is not None:
                listed = {e: snapshot.get(e) for e in wanted}
                missing = [e for e, status in listed.items() if status is None]
                if joining and missing:
                    opted_out = self._fresh_opted_out(keep_alive)
                    listed.update({e: opted_out.get(e) for e in missing})
                return Lookup(listed, snapshot=True)
        found: dict[str, ListStatus | None] = {}
        for email in wanted:
            contact = self.client.get_contact(email, include_lists=True, include_fields=False)
            found[email] = None if contact is None else ListStatus.from_contact(contact)
            keep_alive()
        return Lookup(found, snapshot=False)

    def _fresh_snapshot(self, keep_alive: Callable[[], None]) -> dict[str, ListStatus] | None:
        if self._snapshot is None or self._clock() - self._taken_at > self.max_age:
            snapshot = self.client.export_list_statuses(
                self.list_id, notify_url=self.notify_url, keep_alive=keep_alive
            )
            if snapshot is None:
                # The service refused the status columns: getContact per address from now on.
                self._no_export = True
                return None
            self._snapshot, self._taken_at = snapshot, self._clock()
        return self._snapshot

    def _fresh_opted_out(self, keep_alive: Callable[[], None]) -> dict[str, ListStatus]:
        if self._opted_out is None or self._clock() - self._opted_out_at > self.max_age:
            found = self.client.export_list_statuses(
                None, notify_url=self.notify_url, email_status="unsubscribed", keep_alive=keep_alive
            )
            self._opted_out, self._opted_out_at = found or {}, self._clock()
        return self._opted_out


def _holder_name(snapshot: Snapshot, contact_id: int) -> str:
    if contact_id in snapshot.names:
        return snapshot.names[contact_id]
    known = snapshot.contacts.get(contact_id)
    return known.name if known is not None else ""


def _execute(
    db: Database,
    client: UnisenderClient,
    plan: Plan,
    *,
    account_id: int,
    list_id: int,
    run_id: int | None,
    batch_ids: list[int],
    keep_alive: Callable[[], None],
    statuses: ListStatuses,
) -> ApplyResult:
    """Unisender first, then both views in one transaction (a failure leaves the old views)."""
    result = ApplyResult(stale=plan.stale, unchanged=plan.unchanged)
    if not plan.fresh:
        _mark_seen(db, account_id, batch_ids, run_id)
        return result

    # Who opted out is asked before anything is sent, and left alone: never imported again (the
    # per-list unsubscribe must not be undone) and not removed either (a removal could wipe the
    # per-list status that tells us). Few addresses: getContact each; many: one list export.
    lookup = statuses.lookup(plan.to_exclude, keep_alive)
    joining = statuses.lookup(plan.recheck, keep_alive, joining=True)
    unsubscribed = {
        email
        for email, status in [*lookup.statuses.items(), *joining.statuses.items()]
        if status is not None and status.unsubscribed_from(list_id)
    }
    plan.to_import = [
        row if row.email in plan.update_only else row.model_copy(update={"list_ids": (list_id,)})
        for row in plan.to_import
        if row.email not in unsubscribed
    ]
    plan.to_exclude = [email for email in plan.to_exclude if email not in unsubscribed]
    removals = [email for email in plan.to_exclude if _on_list(email, lookup, plan, list_id)]

    failed: dict[str, tuple[str, str]] = {}
    warned: dict[str, tuple[str, str]] = {}
    if plan.to_import:
        imported = client.import_contacts(plan.to_import, list_id=None)
        result.import_calls = imported.calls
        failed = {e.email: (e.code, e.message) for e in imported.row_errors}
        # A warning's address is on the list: it stays a member, with the note kept beside it;
        # one saying the address is unsubscribed from our list is that status, recorded as such.
        warned = {e.email: (e.code, e.message) for e in imported.row_warnings}
        unsubscribed |= {e for e, (code, _) in warned.items() if code == LIST_UNSUBSCRIBED_WARNING}
    keep_alive()
    if removals:
        # Batched rows (≤500 a call), not one exclude call per address: 1,400 removals used to
        # cost 2,800 calls (with the getContact each) and ran into the per-minute limit.
        removed = client.exclude_from_list(removals, list_id)
        result.import_calls += removed.calls
        result.emails_excluded = len(removals) - len(removed.row_errors)
        if removed.row_errors:
            log.warning(
                "Unisender refused removal rows",
                extra={
                    "account_id": account_id,
                    "rows": len(removed.row_errors),
                    "codes": sorted({e.code for e in removed.row_errors}),
                },
            )
        keep_alive()

    plan.unsubscribed = sorted(unsubscribed)
    result.unsubscribed = len(unsubscribed)
    result.rows_imported = len(plan.to_import) - len(failed)
    result.row_errors = len(failed)
    result.contacts_applied = len(plan.fresh)
    _write_views(db, plan, account_id=account_id, run_id=run_id, failed=failed, warned=warned)
    if run_id is not None:
        fresh_ids = {s.contact_id for s in plan.fresh}
        _mark_seen(db, account_id, [c for c in batch_ids if c not in fresh_ids], run_id)
    if warned:
        log.info(
            "Unisender imported rows with warnings",
            extra={
                "account_id": account_id,
                "rows": len(warned),
                "codes": sorted({code for code, _ in warned.values()}),
            },
        )
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
            "contacts": len(plan.fresh),
            "stale": result.stale,
            "imported": result.rows_imported,
            "excluded": result.emails_excluded,
            "import_calls": result.import_calls,
        },
    )
    return result


def _on_list(email: str, lookup: Lookup, plan: Plan, list_id: int) -> bool:
    """Whether removing this address needs a row: never for one Unisender does not have.

    A row for an unknown address would create it in the account. A snapshot older than our
    own import of the address does not show it yet: an address we put there is removed anyway.
    """
    status = lookup.statuses.get(email)
    if status is not None:
        return list_id in status.list_ids
    return lookup.snapshot and email in plan.ours


def _email_rows(
    account_id: int, emails: dict[int, list[str]], *, unless_in: dict[int, list[str]]
) -> list[tuple[int, int, str]]:
    """`contact_emails` rows of each contact's addresses in `emails` that `unless_in` lacks."""
    return [
        (account_id, cid, email)
        for cid, addresses in emails.items()
        for email in addresses
        if email not in unless_in.get(cid, [])
    ]


def _write_views(
    db: Database,
    plan: Plan,
    *,
    account_id: int,
    run_id: int | None,
    failed: dict[str, tuple[str, str]],
    warned: dict[str, tuple[str, str]],
) -> None:
    with db.transaction() as cur:
        cur.executemany(
            "INSERT INTO contacts (account_id, contact_id, name, amo_updated_at, received_at, "
            "is_deleted, deleted_synthetic, seen_in_run) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE name = VALUES(name), "
            "amo_updated_at = VALUES(amo_updated_at), received_at = VALUES(received_at), "
            "is_deleted = VALUES(is_deleted), deleted_synthetic = VALUES(deleted_synthetic), "
            "seen_in_run = COALESCE(VALUES(seen_in_run), seen_in_run)",
            [
                (
                    account_id,
                    s.contact_id,
                    s.name,
                    s.updated_at,
                    s.received_at,
                    s.deleted,
                    s.deleted and s.synthetic_time,
                    run_id,
                )
                for s in plan.fresh
            ],
        )
        removed = _email_rows(account_id, plan.old_emails, unless_in=plan.new_emails)
        if removed:
            cur.executemany(
                "DELETE FROM contact_emails WHERE account_id = %s AND contact_id = %s "
                "AND email = %s",
                removed,
            )
        added = _email_rows(account_id, plan.new_emails, unless_in=plan.old_emails)
        if added:
            cur.executemany(
                "INSERT IGNORE INTO contact_emails (account_id, contact_id, email) "
                "VALUES (%s, %s, %s)",
                added,
            )
        member_rows: list[tuple[int, str, str, str | None, str | None, str | None]] = []
        for row in plan.to_import:
            name_sent = row.name or ""
            if row.email in failed:
                code, message = failed[row.email]
                member_rows.append(
                    (account_id, row.email, FAILED, name_sent, code[:100], message[:1000])
                )
            else:
                code, message = warned.get(row.email, ("", ""))
                member_rows.append(
                    (
                        account_id,
                        row.email,
                        MEMBER,
                        name_sent,
                        code[:100] or None,
                        message[:1000] or None,
                    )
                )
        for email in [*plan.to_exclude, *plan.quiet_exclude]:
            member_rows.append((account_id, email, EXCLUDED, None, None, None))
        unsubscribed = set(plan.unsubscribed)
        member_rows = [r for r in member_rows if r[1] not in unsubscribed]
        for email in plan.unsubscribed:
            member_rows.append((account_id, email, UNSUBSCRIBED, None, None, None))
        if member_rows:
            # A suppression record stays whatever this batch decided: only Unisender's own
            # statuses write it (a person coming back re-subscribes through Unisender's form).
            cur.executemany(
                "INSERT INTO list_members (account_id, email, state, name_sent, error_code, "
                "error_message) VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "name_sent = IF(state = 'unsubscribed', name_sent, VALUES(name_sent)), "
                "error_code = IF(state = 'unsubscribed', error_code, VALUES(error_code)), "
                "error_message = IF(state = 'unsubscribed', error_message, "
                "VALUES(error_message)), "
                "state = IF(state = 'unsubscribed', state, VALUES(state))",
                member_rows,
            )


def _mark_seen(db: Database, account_id: int, ids: list[int], run_id: int | None) -> None:
    if run_id is None or not ids:
        return
    for part in chunks(ids):
        db.execute(
            "UPDATE contacts SET seen_in_run = %s "  # noqa: S608 - placeholders only
            f"WHERE account_id = %s AND contact_id IN ({placeholders(len(part))})",
            (run_id, account_id, *part),
        )
