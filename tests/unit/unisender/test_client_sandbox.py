"""UnisenderClient against the in-thread emulator: envelopes, retries, batching, semantics."""

from __future__ import annotations

from typing import Any

import pytest

from shared.failures import Scope, decide
from shared.unisender import (
    AccessDenied,
    ImportRow,
    InvalidApiKey,
    KeyRateLimited,
    Transient,
    UnisenderClient,
)
from tests.unit.unisender.conftest import SandboxServer

pytestmark = pytest.mark.unit


def _row(email: str, name: str | None = "Someone", **kwargs: Any) -> ImportRow:
    return ImportRow(email=email, name=name, **kwargs)


def test_envelope_error_inside_http_200_is_raised_without_retry(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient, sleeps: list[float]
) -> None:
    sandbox.fault(kind="error", code="access_denied", message="API disabled", method="getLists")
    with pytest.raises(AccessDenied, match="API disabled"):
        client.get_lists()
    log = sandbox.calls(api_key, "getLists")["log"]
    assert [(e["status"], e["outcome"]) for e in log] == [(200, "fault:access_denied")]
    assert sleeps == []


def test_invalid_api_key_is_permanent(sandbox: SandboxServer, sleeps: list[float]) -> None:
    client = UnisenderClient("no-such-key", base_url=sandbox.api_url, sleep=sleeps.append)
    with pytest.raises(InvalidApiKey) as caught:
        client.get_lists()
    assert caught.value.code == "invalid_api_key"
    assert client.call_counts["getLists"] == 1
    assert sleeps == []


def test_retry_later_then_success(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient, sleeps: list[float]
) -> None:
    sandbox.fault(kind="retry_later", method="getLists", count=2)
    assert client.get_lists() == []
    assert sandbox.calls(api_key)["counts"]["getLists"] == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("kind", ["outage", "non_json"])
def test_outage_or_non_json_is_retried_then_succeeds(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient, sleeps: list[float], kind: str
) -> None:
    sandbox.fault(kind=kind, count=2, status=503)
    list_id = client.ensure_list("amoCRM: outage")
    assert sandbox.state(api_key)["lists"][0]["id"] == list_id
    outcomes = [e["outcome"] for e in sandbox.calls(api_key)["log"]]
    assert outcomes[:3] == [f"fault:{kind}", f"fault:{kind}", "ok"]
    assert len(sleeps) == 2


def test_lasting_outage_gives_up_after_max_attempts(
    sandbox: SandboxServer, client: UnisenderClient, sleeps: list[float]
) -> None:
    sandbox.fault(kind="outage", status=502)
    with pytest.raises(Transient) as caught:
        client.get_fields()
    assert caught.value.code == "http_502"
    assert client.call_counts["getFields"] == 3
    assert len(sleeps) == 2


def test_non_json_body_is_transient(sandbox: SandboxServer, client: UnisenderClient) -> None:
    sandbox.fault(kind="non_json")
    with pytest.raises(Transient) as caught:
        client.get_lists()
    assert caught.value.code == "invalid_json"


def test_hanging_connection_times_out_and_is_retried(
    sandbox: SandboxServer, api_key: str, sleeps: list[float]
) -> None:
    sandbox.fault(kind="hang", seconds=1.0, count=1, method="getLists")
    client = UnisenderClient(
        api_key, base_url=sandbox.api_url, sleep=sleeps.append, timeout=(1, 0.3)
    )
    assert client.get_lists() == []
    assert client.call_counts["getLists"] == 2
    assert len(sleeps) == 1


def test_a_call_limit_is_raised_at_once_for_the_policy_to_reschedule(
    sandbox: SandboxServer, api_key: str, sleeps: list[float]
) -> None:
    sandbox.configure(rate_limit_per_min=2)
    client = UnisenderClient(api_key, base_url=sandbox.api_url, sleep=sleeps.append)
    client.get_lists()
    client.get_lists()
    with pytest.raises(KeyRateLimited) as caught:
        client.get_lists()
    assert caught.value.code == "api_call_limit_exceeded_for_api_key"
    # No worker sleeps through the minute: one call, no retry, no sleep; the job waits instead.
    assert sleeps == [] and client.call_counts["getLists"] == 3
    decision = decide(caught.value)
    assert decision.retriable and decision.delay == 60 and decision.scope is Scope.ACCOUNT


def test_import_1201_rows_makes_three_calls_of_at_most_500(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: big")
    rows = [_row(f"person{i}@example.com", f"Person {i}") for i in range(1201)]
    result = client.import_contacts(rows, list_id=list_id)

    assert (result.calls, result.chunk_sizes) == (3, [500, 500, 201])
    assert (result.total, result.inserted, result.updated, result.invalid) == (1201, 1201, 0, 0)
    assert result.new_emails == 1201
    log = sandbox.calls(api_key, "importContacts")["log"]
    assert [e["rows"] for e in log] == [500, 500, 201]
    state = sandbox.state(api_key)
    assert state["lists"][0]["members"] == 1201


def test_row_errors_are_mapped_to_their_emails_and_the_rest_imports(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: rows")
    emails = ["good1@example.com", "info@example.com", "not-an-email", "good2@example.com"]
    result = client.import_contacts([_row(e) for e in emails], list_id=list_id)

    assert {(e.email, e.code) for e in result.row_errors} == {
        ("info@example.com", "role_email"),
        ("not-an-email", "invalid_email"),
    }
    assert all(e.message for e in result.row_errors)
    assert (result.total, result.inserted, result.invalid) == (4, 2, 2)
    imported = {c["email"] for c in sandbox.state(api_key)["contacts"]}
    assert imported == {"good1@example.com", "good2@example.com"}


def test_string_numbers_and_string_log_indexes_are_parsed(
    sandbox: SandboxServer, client: UnisenderClient
) -> None:
    sandbox.configure(string_numbers=True)
    list_id = client.ensure_list("amoCRM: strings")
    assert isinstance(list_id, int)
    result = client.import_contacts(
        [_row("a@example.com"), _row("admin@example.com")], list_id=list_id
    )
    assert (result.total, result.inserted, result.invalid) == (2, 1, 1)
    assert [e.email for e in result.row_errors] == ["admin@example.com"]


def test_unsubscribed_address_stays_unsubscribed_after_import(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: optout")
    client.import_contacts([_row("Gone@Example.com", "Before")], list_id=list_id)
    sandbox.control("POST", f"/keys/{api_key}/unsubscribe", json={"email": "gone@example.com"})

    result = client.import_contacts([_row("gone@example.com", "After")], list_id=list_id)
    assert (result.updated, result.inserted) == (1, 0)

    contact = client.get_contact("gone@example.com")
    assert contact is not None
    assert contact.status == "unsubscribed"
    assert [(m.id, m.status) for m in contact.lists] == [(list_id, "unsubscribed")]
    assert contact.fields["Name"] == "After"
    for entry in sandbox.calls(api_key, "importContacts")["log"]:
        assert entry["outcome"] == "ok"


def test_exclude_unknown_address_counts_as_done(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: exclude")
    client.import_contacts([_row("member@example.com")], list_id=list_id)

    assert client.exclude("stranger@example.com", [list_id]) is False
    assert client.exclude("Member@Example.com", [list_id]) is True
    assert client.exclude("member@example.com", [list_id]) is False  # repeat: already out
    contact = sandbox.control("GET", f"/keys/{api_key}/contacts/member@example.com")
    assert contact["lists"] == []
    assert contact["status"] == "new"  # excluded, not unsubscribed


def test_exclude_refuses_an_empty_list_of_lists(client: UnisenderClient) -> None:
    with pytest.raises(ValueError, match="list id"):
        client.exclude("a@example.com", [])


@pytest.mark.parametrize("legacy", [False, True], ids=["documented-shape", "nested-shape"])
def test_get_contact_reads_both_shapes(
    sandbox: SandboxServer, client: UnisenderClient, legacy: bool
) -> None:
    list_id = client.ensure_list("amoCRM: shapes")
    client.import_contacts([_row("ivan@example.com", "Иван")], list_id=list_id)
    sandbox.configure(legacy_contact_shape=legacy)

    contact = client.get_contact(" IVAN@example.com ")
    assert contact is not None
    assert (contact.email, contact.status) == ("ivan@example.com", "new")
    assert [m.id for m in contact.lists] == [list_id]
    assert contact.lists[0].status == "active"
    assert contact.fields == {"Name": "Иван"}
    assert contact.added_at


def test_get_contact_unknown_is_none(client: UnisenderClient) -> None:
    assert client.get_contact("nobody@example.com") is None


def test_ensure_list_is_idempotent(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    first = client.ensure_list("amoCRM: account 42")
    second = client.ensure_list("amoCRM: account 42")
    assert first == second
    assert [lst["title"] for lst in sandbox.state(api_key)["lists"]] == ["amoCRM: account 42"]
    assert sandbox.calls(api_key)["counts"]["createList"] == 1


def test_ensure_list_matches_the_exact_title(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["amoCRM: account 4", "amoCRM: account 42 "])
    client = UnisenderClient(key, base_url=sandbox.api_url)
    client.ensure_list("amoCRM: account 42")
    titles = sorted(lst["title"] for lst in sandbox.state(key)["lists"])
    assert titles == ["amoCRM: account 4", "amoCRM: account 42", "amoCRM: account 42 "]


def test_ensure_field_creates_name_once(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(fields=[])
    client = UnisenderClient(key, base_url=sandbox.api_url)
    first = client.ensure_field("Name")
    assert client.ensure_field("Name") == first
    fields = sandbox.state(key)["fields"]
    assert [(f["name"], f["type"]) for f in fields] == [("Name", "string")]
    assert sandbox.calls(key)["counts"]["createField"] == 1


def test_ensure_field_uses_the_default_name_field(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    client.ensure_field("Name")
    assert "createField" not in sandbox.calls(api_key)["counts"]


def test_api_key_travels_in_the_body_never_the_url(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: transport")
    client.import_contacts([_row("a@example.com")], list_id=list_id)
    client.exclude("a@example.com", [list_id])
    client.get_contact("a@example.com")
    log = sandbox.calls(api_key)["log"]
    assert len(log) == 5
    for entry in log:
        assert entry["http_method"] == "POST"
        assert entry["query_args"] == []
        assert entry["api_key_in"] == "body"
        assert {"format", "api_key", "platform"} <= set(entry["form_args"])
        assert entry["platform"] == "amosync"
    assert api_key not in repr(client)


def test_emails_are_normalized_and_deduplicated(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: dedupe")
    rows = [_row(" Dup@Example.COM ", "Old"), _row("dup@example.com", "New")]
    result = client.import_contacts(rows, list_id=list_id)
    assert (result.total, result.calls) == (1, 1)
    contacts = sandbox.state(api_key)["contacts"]
    assert [(c["email"], c["fields"]["Name"]) for c in contacts] == [("dup@example.com", "New")]


def test_rows_without_a_name_never_send_an_empty_name_cell(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: shapes of rows")
    client.import_contacts([_row("kept@example.com", "Kept")], list_id=list_id)
    rows = [_row("kept@example.com", None), _row("named@example.com", "Named")]
    result = client.import_contacts(rows, list_id=list_id)

    assert result.calls == 2  # one call per column set keeps every call rectangular
    contact = sandbox.control("GET", f"/keys/{api_key}/contacts/kept@example.com")
    assert contact["fields"]["Name"] == "Kept"


def test_delete_row_removes_the_contact(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    list_id = client.ensure_list("amoCRM: delete")
    client.import_contacts([_row("bye@example.com")], list_id=list_id)
    result = client.import_contacts([ImportRow(email="bye@example.com", delete=True)])
    assert result.deleted == 1
    assert sandbox.state(api_key)["contacts"] == []


def test_excluded_list_ids_column_leaves_the_list(
    sandbox: SandboxServer, api_key: str, client: UnisenderClient
) -> None:
    keep = client.ensure_list("amoCRM: keep")
    drop = client.ensure_list("amoCRM: drop")
    client.import_contacts([_row("x@example.com", list_ids=(keep, drop))])
    client.import_contacts([_row("x@example.com", excluded_list_ids=(drop,))])
    contact = sandbox.control("GET", f"/keys/{api_key}/contacts/x@example.com")
    assert [m["id"] for m in contact["lists"]] == [keep]


def test_is_contact_in_lists(client: UnisenderClient) -> None:
    list_id = client.ensure_list("amoCRM: membership")
    client.import_contacts([_row("in@example.com")], list_id=list_id)
    assert client.is_contact_in_lists("in@example.com", [list_id]) is True
    assert client.is_contact_in_lists("out@example.com", [list_id]) is False
