"""The contacts page's queries stay bounded however many ids and addresses a page carries."""

from __future__ import annotations

from typing import Any

import pytest

from shared.accounts import AccountRow
from shared.amocrm.models import Contact
from shared.lookup import _with_sync_state

pytestmark = pytest.mark.unit


class RecordingDb:
    def __init__(self) -> None:
        self.queries: list[tuple[str, tuple[Any, ...]]] = []

    def fetch_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        self.queries.append((sql, params))
        return []


def test_in_lists_are_chunked() -> None:
    contacts = [
        Contact.model_validate(
            {
                "id": n,
                "name": f"P{n}",
                "custom_fields_values": [
                    {
                        "field_id": 5,
                        "field_code": "EMAIL",
                        "values": [
                            {"value": f"p{n}.{k}@x.ru", "enum_code": "WORK"} for k in range(3)
                        ],
                    }
                ],
            }
        )
        for n in range(1, 601)
    ]
    db = RecordingDb()
    items = _with_sync_state(db, AccountRow(id=1, name="a", host="a.amocrm.ru"), contacts)  # type: ignore[arg-type]
    assert len(items) == 600
    in_lists = [q for q in db.queries if " IN (" in q[0]]
    assert in_lists and all(len(params) <= 501 for _, params in in_lists)
    emails = {p for sql, params in in_lists if "list_members" in sql for p in params[1:]}
    assert len(emails) == 1800
