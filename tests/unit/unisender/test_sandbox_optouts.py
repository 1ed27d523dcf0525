"""Contract: an opt-out (per list or account-wide) survives every import; `delete` rows in batches.

Docs: import cannot change a status that is not active/inactive; "It is impossible to restore the
«active» status through API". Whether re-importing a list id clears a per-list unsubscribe is
[unverified]: the emulator never lets it, answers a warning (the row IS imported), and records the
attempt so a sync can be tested on never making one (issue 12, item 5).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.unisender.conftest import SandboxServer

pytestmark = pytest.mark.unit


def _form(key: str, **args: Any) -> dict[str, Any]:
    return {"format": "json", "api_key": key, **args}


def _import(
    sandbox: SandboxServer, key: str, names: list[str], rows: list[list[str]], **extra: str
) -> Any:
    data: dict[str, str] = {f"field_names[{i}]": n for i, n in enumerate(names)}
    for r, row in enumerate(rows):
        data.update({f"data[{r}][{c}]": v for c, v in enumerate(row)})
    body = sandbox.api("importContacts", _form(key, **data, **extra))
    assert "result" in body, body
    return body["result"]


def _contact(sandbox: SandboxServer, key: str, email: str) -> dict[str, Any]:
    return dict(sandbox.control("GET", f"/keys/{key}/contacts/{email}"))


def _list_status(sandbox: SandboxServer, key: str, email: str) -> dict[int, str]:
    return {m["id"]: m["status"] for m in _contact(sandbox, key, email)["lists"]}


@pytest.fixture
def two_lists(sandbox: SandboxServer) -> tuple[str, int, int]:
    key = sandbox.new_key(
        lists=["Ours", "Theirs"],
        contacts=[{"email": "p@x.ru", "status": "active", "lists": ["Ours", "Theirs"]}],
    )
    ours, theirs = (lst["id"] for lst in sandbox.state(key)["lists"])
    return key, ours, theirs


def test_reimport_with_the_list_id_keeps_a_per_list_unsubscribe(
    sandbox: SandboxServer, two_lists: tuple[str, int, int]
) -> None:
    key, ours, theirs = two_lists
    sandbox.control(
        "POST", f"/keys/{key}/unsubscribe", json={"email": "p@x.ru", "list_ids": [ours]}
    )
    result = _import(
        sandbox, key, ["email", "email_list_ids", "Name"], [["p@x.ru", str(ours), "P"]]
    )
    assert (result["updated"], result["invalid"]) == (1, 0)  # imported: a warning, not a failure
    assert [(e["index"], e["code"]) for e in result["log"]] == [(0, "list_unsubscribed")]
    assert _list_status(sandbox, key, "p@x.ru") == {ours: "unsubscribed", theirs: "active"}
    assert _contact(sandbox, key, "p@x.ru")["fields"]["Name"] == "P"  # the rest was applied
    attempts = sandbox.state(key)["resubscribe_attempts"]
    assert [(a["method"], a["email"], a["list_id"]) for a in attempts] == [
        ("importContacts", "p@x.ru", ours)
    ]


@pytest.mark.parametrize("overwrite_lists", ["0", "1"])
def test_exclude_or_overwrite_then_reimport_stays_unsubscribed(
    sandbox: SandboxServer, two_lists: tuple[str, int, int], overwrite_lists: str
) -> None:
    key, ours, theirs = two_lists
    sandbox.api(
        "unsubscribe", _form(key, contact_type="email", contact="p@x.ru", list_ids=str(ours))
    )
    if overwrite_lists == "1":  # the membership row goes with overwrite_lists ...
        _import(
            sandbox,
            key,
            ["email", "email_list_ids"],
            [["p@x.ru", str(theirs)]],
            overwrite_lists="1",
        )
    else:  # ... or with exclude
        sandbox.api(
            "exclude", _form(key, contact_type="email", contact="p@x.ru", list_ids=str(ours))
        )
    assert ours not in _list_status(sandbox, key, "p@x.ru")
    _import(
        sandbox,
        key,
        ["email", "email_list_ids"],
        [["p@x.ru", str(ours)]],
        overwrite_lists=overwrite_lists,
    )
    assert _list_status(sandbox, key, "p@x.ru")[ours] == "unsubscribed"


def test_account_level_unsubscribe_survives_status_and_lists(
    sandbox: SandboxServer, two_lists: tuple[str, int, int]
) -> None:
    key, ours, _ = two_lists
    sandbox.control("POST", f"/keys/{key}/unsubscribe", json={"email": "p@x.ru"})
    result = _import(
        sandbox, key, ["email", "email_status", "email_list_ids"], [["p@x.ru", "active", str(ours)]]
    )
    assert result["updated"] == 1
    assert {e["code"] for e in result["log"]} == {"status_not_changed", "list_unsubscribed"}
    contact = _contact(sandbox, key, "p@x.ru")
    assert contact["status"] == "unsubscribed"
    assert {m["status"] for m in contact["lists"]} == {"unsubscribed"}


def test_delete_then_reimport_does_not_launder_an_opt_out(
    sandbox: SandboxServer, two_lists: tuple[str, int, int]
) -> None:
    key, ours, _ = two_lists
    sandbox.control(
        "POST", f"/keys/{key}/unsubscribe", json={"email": "p@x.ru", "list_ids": [ours]}
    )
    assert _import(sandbox, key, ["email", "delete"], [["p@x.ru", "1"]])["deleted"] == 1
    assert all(c["email"] != "p@x.ru" for c in sandbox.state(key)["contacts"])
    _import(sandbox, key, ["email", "email_list_ids"], [["p@x.ru", str(ours)]])
    assert _list_status(sandbox, key, "p@x.ru") == {ours: "unsubscribed"}


def test_subscribe_double_optin_3_cannot_reactivate(
    sandbox: SandboxServer, two_lists: tuple[str, int, int]
) -> None:
    key, ours, _ = two_lists
    sandbox.control(
        "POST", f"/keys/{key}/unsubscribe", json={"email": "p@x.ru", "list_ids": [ours]}
    )
    args = _form(key, list_ids=str(ours), double_optin="3", **{"fields[email]": "p@x.ru"})
    assert "person_id" in sandbox.api("subscribe", args)["result"]
    assert _list_status(sandbox, key, "p@x.ru")[ours] == "unsubscribed"
    in_list = sandbox.api("isContactInLists", _form(key, email="p@x.ru", list_ids=str(ours)))
    assert in_list["result"] is False


def test_only_the_person_can_come_back(
    sandbox: SandboxServer, two_lists: tuple[str, int, int]
) -> None:
    key, ours, _ = two_lists
    sandbox.control("POST", f"/keys/{key}/unsubscribe", json={"email": "p@x.ru"})
    sandbox.control(
        "POST",
        f"/keys/{key}/simulate",
        json={"event": "subscribe", "email": "p@x.ru", "list_ids": [ours]},
    )
    contact = _contact(sandbox, key, "p@x.ru")
    assert contact["status"] == "active"
    assert _list_status(sandbox, key, "p@x.ru")[ours] == "active"
    result = _import(sandbox, key, ["email", "email_list_ids"], [["p@x.ru", str(ours)]])
    assert result["log"] == []
    assert _list_status(sandbox, key, "p@x.ru")[ours] == "active"


def test_batched_delete_rows_scoped_to_a_list(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["Ours", "Theirs"])
    ours, theirs = (lst["id"] for lst in sandbox.state(key)["lists"])
    emails = [f"d{i}@x.ru" for i in range(500)]
    _import(sandbox, key, ["email", "email_list_ids"], [[e, f"{ours},{theirs}"] for e in emails])
    rows = [[e, "1", str(ours)] for e in emails]
    result = _import(sandbox, key, ["email", "delete", "email_list_ids"], rows)
    assert (result["total"], result["deleted"], result["invalid"]) == (500, 500, 0)
    members = {lst["id"]: lst["members"] for lst in sandbox.state(key)["lists"]}
    assert members == {ours: 0, theirs: 500}
    # A row for an address not on the list (or unknown) deletes nothing and is not counted.
    again = _import(
        sandbox, key, ["email", "delete", "email_list_ids"], [*rows[:3], ["n@x.ru", "1", str(ours)]]
    )
    assert again["deleted"] == 0
    refused = sandbox.api(
        "importContacts",
        _form(
            key,
            **{"field_names[0]": "email", "field_names[1]": "delete"},
            **{f"data[{i}][{c}]": v for i in range(501) for c, v in enumerate([f"z{i}@x.ru", "1"])},
        ),
    )
    assert refused["code"] == "invalid_arg"


def test_delete_and_add_rows_in_one_call(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["L"], contacts=[{"email": "old@x.ru", "lists": ["L"]}])
    lid = sandbox.state(key)["lists"][0]["id"]
    result = _import(
        sandbox,
        key,
        ["email", "delete", "email_list_ids"],
        [["old@x.ru", "1", str(lid)], ["new@x.ru", "0", str(lid)]],
    )
    assert (result["deleted"], result["inserted"]) == (1, 1)
    assert {c["email"]: len(c["lists"]) for c in sandbox.state(key)["contacts"]} == {
        "old@x.ru": 0,
        "new@x.ru": 1,
    }


def test_importing_someone_as_unsubscribed_is_not_an_attempt(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["L"])
    lid = sandbox.state(key)["lists"][0]["id"]
    row = [["moved@x.ru", "unsubscribed", str(lid)]]
    result = _import(sandbox, key, ["email", "email_status", "email_list_ids"], row)
    assert (result["inserted"], result["log"]) == (1, [])
    assert _list_status(sandbox, key, "moved@x.ru") == {lid: "unsubscribed"}
    assert sandbox.state(key)["resubscribe_attempts"] == []
