"""THE email rules: trim, lower-case, validate, dedupe; types by code or mapped enum id."""

from __future__ import annotations

import pytest

from shared.amocrm.models import Contact
from shared.contacts import parse_email_types, select_emails, unknown_enum_ids, valid_email
from shared.jobs import EmailValue

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ivan@Example.COM ", "ivan@example.com"),
        ("a.b+tag@sub.example.ru", "a.b+tag@sub.example.ru"),
        ("no-at-sign", None),
        ("two@@x.ru", None),
        ("spa ce@x.ru", None),
        ("x@nodot", None),
        ("", None),
        (None, None),
        ("a@" + "b" * 250 + ".ru", None),
    ],
)
def test_valid_email(raw: str | None, expected: str | None) -> None:
    assert valid_email(raw) == expected


def test_select_emails_dedupes_normalizes_and_keeps_order() -> None:
    values = [
        EmailValue(value=" B@x.ru", enum_id=1),
        EmailValue(value="a@x.ru", enum_id=2),
        EmailValue(value="b@X.RU", enum_id=2),
        EmailValue(value="broken", enum_id=1),
    ]
    assert select_emails(values) == ["b@x.ru", "a@x.ru"]


def test_allowed_types_use_mapped_enum_ids_and_drop_unknown_ones() -> None:
    codes = {11: "WORK", 12: "PRIV"}
    values = [
        EmailValue(value="w@x.ru", enum_id=11),
        EmailValue(value="p@x.ru", enum_id=12),
        EmailValue(value="u@x.ru", enum_id=99),
        EmailValue(value="c@x.ru", enum_code="work"),
    ]
    assert select_emails(values, enum_codes=codes, allowed_types={"WORK"}) == ["w@x.ru", "c@x.ru"]
    assert select_emails(values, enum_codes=codes, allowed_types=None) == [
        "w@x.ru",
        "p@x.ru",
        "u@x.ru",
        "c@x.ru",
    ]
    assert unknown_enum_ids(values, codes) == {99}


def test_api_contacts_match_the_email_field_by_code_never_by_name() -> None:
    contact = Contact.model_validate(
        {
            "id": 1,
            "custom_fields_values": [
                {
                    "field_id": 1,
                    "field_name": "Email",
                    "field_code": None,
                    "values": [{"value": "fake@x.ru"}],
                },
                {
                    "field_id": 2,
                    "field_name": "Почта",
                    "field_code": "EMAIL",
                    "values": [{"value": "Real@X.ru", "enum_id": 5, "enum_code": "PRIV"}],
                },
            ],
        }
    )
    assert select_emails(contact.email_values()) == ["real@x.ru"]
    assert select_emails(contact.email_values(), allowed_types={"WORK"}) == []


def test_parse_email_types() -> None:
    assert parse_email_types(None) is None
    assert parse_email_types(" ") is None
    assert parse_email_types("work, priv") == {"WORK", "PRIV"}
    assert parse_email_types(["OTHER"]) == {"OTHER"}
