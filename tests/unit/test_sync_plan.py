"""plan_changes: the diff of a batch of contact states against our views, without MySQL."""

from __future__ import annotations

import pytest

from shared.sync import (
    EXCLUDED,
    FAILED,
    MEMBER,
    ContactState,
    ListMember,
    Snapshot,
    StoredContact,
    newest_per_contact,
    plan_changes,
)

pytestmark = pytest.mark.unit


def state(
    cid: int, *emails: str, name: str = "N", at: int = 100, deleted: bool = False
) -> ContactState:
    return ContactState(cid, name, at, list(emails), deleted)


def imported(plan: object) -> dict[str, str | None]:
    return {row.email: row.name for row in plan.to_import}  # type: ignore[attr-defined]


def test_new_contacts_are_imported_with_their_names() -> None:
    plan = plan_changes([state(1, "a@x.ru", name="Ann")], Snapshot())
    assert imported(plan) == {"a@x.ru": "Ann"}
    assert plan.to_exclude == [] and plan.unchanged == 0


def test_names_are_normalized_once_when_a_state_is_built() -> None:
    assert state(1, name="  Ann  ").name == "Ann"
    assert len(state(1, name="x" * 300).name) == 255


def test_an_older_state_is_stale() -> None:
    snapshot = Snapshot(contacts={1: StoredContact("N", 200, False)}, emails={1: ["new@x.ru"]})
    plan = plan_changes([state(1, "old@x.ru", at=150)], snapshot)
    assert plan.stale == 1 and plan.fresh == [] and plan.to_import == []


def test_a_changed_email_imports_the_new_and_excludes_the_old() -> None:
    snapshot = Snapshot(
        contacts={1: StoredContact("N", 100, False)},
        emails={1: ["old@x.ru"]},
        members={"old@x.ru": ListMember(MEMBER, "N")},
    )
    plan = plan_changes([state(1, "new@x.ru", at=101)], snapshot)
    assert imported(plan) == {"new@x.ru": "N"}
    assert plan.to_exclude == ["old@x.ru"]


def test_a_shared_address_stays_while_another_contact_holds_it() -> None:
    snapshot = Snapshot(
        contacts={1: StoredContact("N", 100, False)},
        emails={1: ["shared@x.ru"]},
        holders={"shared@x.ru": {2}},
        members={"shared@x.ru": ListMember(MEMBER, "N")},
        names={2: "N"},
    )
    plan = plan_changes([state(1, deleted=True, at=101)], snapshot)
    assert plan.to_import == [] and plan.to_exclude == []


def test_unchanged_rows_are_not_imported_and_failed_rows_leave_quietly() -> None:
    snapshot = Snapshot(
        contacts={1: StoredContact("N", 100, False)},
        emails={1: ["a@x.ru", "bad@x.ru"]},
        members={"a@x.ru": ListMember(MEMBER, "N"), "bad@x.ru": ListMember(FAILED, "N")},
    )
    same = plan_changes([state(1, "a@x.ru", "bad@x.ru", at=101)], snapshot)
    assert same.to_import == [] and same.unchanged == 1
    dropped = plan_changes([state(1, "a@x.ru", at=102)], snapshot)
    assert dropped.quiet_exclude == ["bad@x.ru"] and dropped.to_exclude == []


def test_an_excluded_address_that_comes_back_is_imported() -> None:
    snapshot = Snapshot(members={"a@x.ru": ListMember(EXCLUDED, None)})
    plan = plan_changes([state(1, "a@x.ru")], snapshot)
    assert imported(plan) == {"a@x.ru": "N"}


def test_newest_per_contact_keeps_the_greatest_version_later_wins_ties() -> None:
    first, tie, old = state(1, "a@x.ru", at=200), state(1, "b@x.ru", at=200), state(1, at=100)
    assert newest_per_contact([first, tie, old]) == [tie]


def test_an_unsubscribed_address_is_never_imported_or_excluded() -> None:
    from shared.sync import UNSUBSCRIBED

    snapshot = Snapshot(
        contacts={1: StoredContact("N", 100, False)},
        emails={1: ["u@x.ru"]},
        members={
            "u@x.ru": ListMember(UNSUBSCRIBED, None),
            "v@x.ru": ListMember(UNSUBSCRIBED, None),
        },
    )
    kept = plan_changes([state(1, "u@x.ru", "v@x.ru", name="New name", at=101)], snapshot)
    assert kept.to_import == [] and kept.recheck == []
    dropped = plan_changes([state(1, deleted=True, at=102)], snapshot)
    assert dropped.to_exclude == [] and dropped.quiet_exclude == []


def test_an_address_we_excluded_is_rechecked_before_it_is_imported() -> None:
    snapshot = Snapshot(members={"a@x.ru": ListMember(EXCLUDED, None)})
    assert plan_changes([state(1, "a@x.ru")], snapshot).recheck == ["a@x.ru"]
