"""UnisenderClient wire format and envelope handling, checked byte for byte with `responses`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from shared.unisender import (
    ImportRow,
    InvalidArgument,
    IpRateLimited,
    KeyRateLimited,
    NotFound,
    RetryLater,
    Transient,
    UnisenderClient,
    UnisenderContact,
    UnisenderError,
    UnknownMethod,
    encode_form,
)

pytestmark = pytest.mark.unit

BASE = "https://api.unisender.com/en/api"
KEY = "secret-key-0123456789"


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as requests_mock:
        yield requests_mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> UnisenderClient:
    return UnisenderClient(KEY, base_url=BASE, platform="amosync-test", sleep=sleeps.append)


def _sent(mock: responses.RequestsMock, index: int = 0) -> list[tuple[str, str]]:
    body = mock.calls[index].request.body
    assert isinstance(body, str)
    return parse_qsl(body, keep_blank_values=True)


def test_import_body_is_bracket_encoded_exactly(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/importContacts", json={"result": {"total": 2, "inserted": 2}})
    rows = [
        ImportRow(email="a@x.ru", name="Иван", list_ids=(7,)),
        ImportRow(email="b@x.ru", name="Пётр", list_ids=(7, 9)),
    ]
    client.import_contacts(rows, list_id=7)

    request = mock.calls[0].request
    assert request.url == f"{BASE}/importContacts"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _sent(mock) == [
        ("format", "json"),
        ("api_key", KEY),
        ("platform", "amosync-test"),
        ("field_names[0]", "email"),
        ("field_names[1]", "Name"),
        ("field_names[2]", "email_list_ids"),
        ("data[0][0]", "a@x.ru"),
        ("data[0][1]", "Иван"),
        ("data[0][2]", "7"),
        ("data[1][0]", "b@x.ru"),
        ("data[1][1]", "Пётр"),
        ("data[1][2]", "7,9"),
    ]
    assert str(request.body).startswith("format=json&api_key=secret-key-0123456789&platform=")
    assert "field_names%5B0%5D=email" in str(request.body)


def test_api_key_is_never_in_the_url(mock: responses.RequestsMock, client: UnisenderClient) -> None:
    mock.post(f"{BASE}/getLists", json={"result": []})
    client.get_lists()
    url = mock.calls[0].request.url
    assert url is not None
    assert KEY not in url
    assert "?" not in url
    assert ("api_key", KEY) in _sent(mock)


def test_exclude_sends_comma_separated_list_ids(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/exclude", json={"result": {}})
    assert client.exclude(" A@X.ru ", [3, 4, 3]) is True
    sent = dict(_sent(mock))
    assert (sent["contact_type"], sent["contact"], sent["list_ids"]) == ("email", "a@x.ru", "3,4")


def test_documented_not_found_envelope_on_exclude_is_done(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    body = {"error": 'Contact "x@x.ru" not found', "code": "unspecified", "result": ""}
    mock.post(f"{BASE}/exclude", json=body)
    assert client.exclude("x@x.ru", [1]) is False


def test_error_wins_over_a_present_result(
    mock: responses.RequestsMock, client: UnisenderClient, sleeps: list[float]
) -> None:
    mock.post(f"{BASE}/getLists", json={"result": "", "error": "bad arg", "code": "invalid_arg"})
    with pytest.raises(InvalidArgument):
        client.get_lists()
    assert len(mock.calls) == 1
    assert sleeps == []


def test_html_encoded_message_is_decoded(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    body = {"error": "Title &quot;x&quot; taken", "code": "unspecified"}
    mock.post(f"{BASE}/createList", json=body)
    with pytest.raises(UnisenderError) as caught:
        client.create_list("x")
    assert caught.value.message == 'Title "x" taken'
    assert not isinstance(caught.value, Transient)


def test_http_5xx_is_retried_with_growing_backoff(
    mock: responses.RequestsMock, client: UnisenderClient, sleeps: list[float]
) -> None:
    mock.post(f"{BASE}/getFields", status=500, body="oops")
    with pytest.raises(Transient):
        client.get_fields()
    assert len(mock.calls) == 3
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_connection_error_is_transient(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/getLists", body=requests.ConnectionError("refused"))
    mock.post(f"{BASE}/getLists", json={"result": [{"id": "5", "title": "t", "extra": 1}]})
    lists = client.get_lists()
    assert [(lst.id, lst.title) for lst in lists] == [(5, "t")]


def test_import_stops_after_three_attempts_even_if_allowed_more(
    mock: responses.RequestsMock, sleeps: list[float]
) -> None:
    client = UnisenderClient(KEY, base_url=BASE, max_attempts=6, sleep=sleeps.append)
    mock.post(f"{BASE}/importContacts", json={"error": "later", "code": "retry_later"})
    with pytest.raises(RetryLater):
        client.import_contacts([ImportRow(email="a@x.ru")])
    assert len(mock.calls) == 3
    assert client.call_counts["importContacts"] == 3


def test_lenient_counters_and_string_log_indexes(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    result = {
        "total": "3",
        "inserted": "1",
        "updated": 1,
        "deleted": "0",
        "new_emails": "1",
        "invalid": "1",
        "log": [{"index": "2", "code": "x1", "message": "role address"}],
    }
    mock.post(f"{BASE}/importContacts", json={"result": result})
    rows = [ImportRow(email=e) for e in ("a@x.ru", "b@x.ru", "sales@x.ru")]
    outcome = client.import_contacts(rows)
    assert (outcome.total, outcome.inserted, outcome.updated, outcome.invalid) == (3, 1, 1, 1)
    assert [(e.email, e.code) for e in outcome.row_errors] == [("sales@x.ru", "x1")]


def test_log_indexes_are_relative_to_their_chunk(mock: responses.RequestsMock) -> None:
    client = UnisenderClient(KEY, base_url=BASE, batch_size=2)
    for _ in range(2):
        mock.post(
            f"{BASE}/importContacts",
            json={"result": {"total": 2, "invalid": 1, "log": [{"index": 1, "code": "c"}]}},
        )
    rows = [ImportRow(email=f"p{i}@x.ru") for i in range(4)]
    outcome = client.import_contacts(rows)
    assert outcome.chunk_sizes == [2, 2]
    assert [e.email for e in outcome.row_errors] == ["p1@x.ru", "p3@x.ru"]


def test_import_never_sends_email_status(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/importContacts", json={"result": {"total": 1}})
    client.import_contacts([ImportRow(email="a@x.ru", name="A")], list_id=5)
    assert all(not key.startswith("field_names") or v != "email_status" for key, v in _sent(mock))


def test_user_fields_may_not_shadow_system_columns() -> None:
    client = UnisenderClient(KEY, base_url=BASE)
    with pytest.raises(ValueError, match="email_status"):
        client.import_contacts([ImportRow(email="a@x.ru", fields={"email_status": "active"})])


@pytest.mark.parametrize("code", ["unspecified", "invalid_arg"])
def test_ensure_list_reads_back_after_a_duplicate_title_error(
    mock: responses.RequestsMock, client: UnisenderClient, code: str
) -> None:
    mock.post(f"{BASE}/getLists", json={"result": []})
    mock.post(f"{BASE}/createList", json={"error": "title already exists", "code": code})
    mock.post(f"{BASE}/getLists", json={"result": [{"id": 77, "title": "T"}]})
    assert client.ensure_list("T") == 77


def test_ensure_list_does_not_mask_a_bad_key(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/getLists", json={"result": []})
    mock.post(f"{BASE}/createList", json={"error": "key", "code": "invalid_api_key"})
    with pytest.raises(UnisenderError) as caught:
        client.ensure_list("T")
    assert caught.value.code == "invalid_api_key"
    assert len(mock.calls) == 2


def test_get_contact_flags_and_documented_shape(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    result = {
        "email": {"email": "a@x.ru", "added_at": "2024-01-01 10:00:00", "status": "active"},
        "lists": [{"id": "123", "status": "active", "added_at": "2024-01-01 10:00:00"}],
        "fields": {"Name": "Иван"},
    }
    mock.post(f"{BASE}/getContact", json={"result": result})
    contact = client.get_contact("A@x.ru", include_details=True)
    assert contact is not None
    assert [m.id for m in contact.lists] == [123]
    sent = dict(_sent(mock))
    assert (sent["email"], sent["include_lists"], sent["include_fields"]) == ("a@x.ru", "1", "1")
    assert sent["include_details"] == "1"


def test_contact_nested_shape_and_php_empty_fields() -> None:
    nested = {"email": {"email": "a@x.ru", "status": "new", "lists": [{"id": 1}], "fields": []}}
    contact = UnisenderContact.from_result(nested)
    assert contact is not None
    assert ([m.id for m in contact.lists], contact.fields) == ([1], {})


@pytest.mark.parametrize(
    "body",
    [
        {"error": 'Contact "a@x.ru" not found', "code": "unspecified"},
        {"error": "Contact not found", "code": "invalid_arg"},
        {"result": ""},
    ],
)
def test_get_contact_unknown_reads_as_none(
    mock: responses.RequestsMock, client: UnisenderClient, body: dict[str, str]
) -> None:
    mock.post(f"{BASE}/getContact", json=body)
    assert client.get_contact("a@x.ru") is None


def test_get_contact_other_errors_raise(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    mock.post(f"{BASE}/getContact", json={"error": "Invalid email", "code": "invalid_arg"})
    with pytest.raises(InvalidArgument):
        client.get_contact("a@x.ru")


def test_not_found_is_recognized_through_a_prefix() -> None:
    from shared.unisender.errors import error_from_envelope

    assert isinstance(error_from_envelope("XX1 [Contact not found]", "unspecified"), NotFound)


def test_key_stays_out_of_repr_and_logs(
    mock: responses.RequestsMock, client: UnisenderClient, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(f"{BASE}/getLists", status=503)
    mock.post(f"{BASE}/getLists", json={"result": []})
    with caplog.at_level(logging.DEBUG):
        client.get_lists()
    assert KEY not in repr(client)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.__dict__)


def test_encode_form_nests_and_skips_none() -> None:
    pairs = encode_form({"fields": {"email": "a@x.ru", "Name": None}, "flag": True, "ids": "1,2"})
    assert pairs == [("fields[email]", "a@x.ru"), ("flag", "1"), ("ids", "1,2")]


def test_a_ru_api_base_is_called_in_english(mock: responses.RequestsMock) -> None:
    """Error texts follow the URL's language; the ones we recognise are English."""
    client = UnisenderClient(KEY, base_url="https://api.unisender.com/ru/api/")
    mock.post(f"{BASE}/getLists", json={"result": []})
    assert client.base_url == BASE and client.get_lists() == []


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        # The code decides first, whatever the text says.
        ('Contact "a@x.ru" not found', "invalid_arg", InvalidArgument),
        ("API call limit exceeded", "api_call_limit_exceeded_for_api_key", KeyRateLimited),
        ("API call limit exceeded", "api_call_limit_exceeded_for_ip", IpRateLimited),
        # `unspecified`: a small set of known English messages, nothing looser.
        ('Contact "a@x.ru" not found', "unspecified", NotFound),
        ("XX9 [Contact &quot;a@x.ru&quot; not found]", "unspecified", NotFound),
        ('These list ids="5" has no confirmation letters', "unspecified", InvalidArgument),
        (
            "Contacts a@x.ru and +7999 already exist but owned by different subscribers",
            "",
            InvalidArgument,
        ),
        ("Call to a member function getMessage() on boolean", "unspecified", UnknownMethod),
        ("List not found somewhere", "unspecified", UnisenderError),
    ],
)
def test_errors_are_known_by_code_then_by_a_few_messages(
    error: str, code: str, expected: type[UnisenderError]
) -> None:
    from shared.unisender.errors import error_from_envelope

    assert type(error_from_envelope(error, code)) is expected


def test_import_warnings_are_not_failures(
    mock: responses.RequestsMock, client: UnisenderClient
) -> None:
    """A warning's row is imported (not counted in `invalid`): it must not read as failed."""
    mock.post(
        f"{BASE}/importContacts",
        json={
            "result": {
                "total": 3, "inserted": 2, "invalid": 1,
                "log": [
                    {"index": 0, "code": "invalid_email", "message": "Invalid email"},
                    {"index": 1, "code": "list_unsubscribed", "message": "Unsubscribed from 5"},
                ],
            }
        },
    )  # fmt: skip
    mock.post(
        f"{BASE}/importContacts",
        json={"result": {"total": 1, "updated": 1, "invalid": 0,
                         "log": [{"index": 0, "code": "something_new", "message": "note"}]}},
    )  # fmt: skip
    rows = [ImportRow(email=e) for e in ("bad@x", "gone@x.ru", "ok@x.ru")]
    result = client.import_contacts(rows, list_id=5)
    assert [(e.email, e.code) for e in result.row_errors] == [("bad@x", "invalid_email")]
    assert [(w.email, w.code) for w in result.row_warnings] == [("gone@x.ru", "list_unsubscribed")]
    # A call that reports no invalid row failed none, whatever its log says.
    again = client.import_contacts([ImportRow(email="ok@x.ru")], list_id=5)
    assert again.row_errors == [] and [w.code for w in again.row_warnings] == ["something_new"]
