"""Contract: the emulator answers like amoCRM where clients nobody here wrote tripped on it.

Unknown routes and wrong methods get problem+json (not Flask's HTML), injected faults carry the
status's own title, `custom_fields?limit=250` is clamped, and contacts can be written through
`POST`/`PATCH /api/v4/contacts` (issue 12 item 8).
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from .conftest import Receiver, Sandbox

pytestmark = pytest.mark.unit


def api(sandbox: Sandbox) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {sandbox.tokens()['access_token']}"
    return session


def assert_problem(resp: requests.Response, status: int, title: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = dict(resp.json())
    assert body["status"] == status and body["title"] == title
    assert body["type"] == f"https://httpstatus.es/{status}"
    return body


@pytest.mark.parametrize("path", ["/api/v4/no_such_thing", "/api/v4/contacts/abc", "/nowhere"])
def test_unknown_routes_answer_problem_json(sandbox: Sandbox, path: str) -> None:
    assert_problem(api(sandbox).get(f"{sandbox.url}{path}", timeout=10), 404, "Not Found")


def test_wrong_methods_answer_problem_json_with_allow(sandbox: Sandbox) -> None:
    resp = api(sandbox).put(f"{sandbox.url}/api/v4/account", json={}, timeout=10)
    assert_problem(resp, 405, "Method Not Allowed")
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (402, "Payment Required"),
        (429, "Too Many Requests"),
        (500, "ErrInternalServer"),  # amoCRM's own title for a 500 (reference §5)
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
    ],
)
def test_injected_faults_carry_the_real_title(sandbox: Sandbox, status: int, title: str) -> None:
    sandbox.control("POST", "/faults", json={"status": status, "count": 1})
    body = assert_problem(
        api(sandbox).get(f"{sandbox.url}/api/v4/account", timeout=10), status, title
    )
    assert ("trace_id" in body) == (status >= 500)


def test_custom_fields_limit_250_is_clamped(sandbox: Sandbox) -> None:
    for n in range(60):  # 3 predefined + 60 = 63 fields
        sandbox.control(
            "POST", f"/accounts/{sandbox.account_id}/custom_fields", json={"name": f"F{n}"}
        )
    session = api(sandbox)
    url = f"{sandbox.url}/api/v4/contacts/custom_fields"
    first = session.get(url, params={"limit": 250}, timeout=10)
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["_embedded"]["custom_fields"]) == 50
    assert "next" in body["_links"]
    second = session.get(body["_links"]["next"]["href"], timeout=10)
    assert len(second.json()["_embedded"]["custom_fields"]) == 13
    assert "next" not in second.json()["_links"]
    assert session.get(url, params={"limit": 0}, timeout=10).status_code == 400


def test_contacts_are_created_and_updated_through_the_api(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    session = api(sandbox)
    sandbox.client().subscribe_webhook(f"{receiver.url}/hook", ["add_contact", "update_contact"])
    created = session.post(
        f"{sandbox.url}/api/v4/contacts",
        json=[
            {
                "name": "Ann Lee",
                "custom_fields_values": [
                    {
                        "field_code": "EMAIL",
                        "values": [{"value": "ann@x.test", "enum_code": "WORK"}],
                    }
                ],
            }
        ],
        timeout=10,
    )
    assert created.status_code == 200, created.text
    (row,) = created.json()["_embedded"]["contacts"]
    assert row["request_id"] == "0"
    contact = session.get(f"{sandbox.url}/api/v4/contacts/{row['id']}", timeout=10).json()
    assert contact["name"] == "Ann Lee"
    (email,) = contact["custom_fields_values"]
    assert email["field_code"] == "EMAIL" and email["values"][0]["value"] == "ann@x.test"
    work = email["values"][0]["enum_id"]
    updated = session.patch(
        f"{sandbox.url}/api/v4/contacts",
        json=[
            {
                "id": row["id"],
                "name": "Ann Smith",
                "custom_fields_values": [
                    {
                        "field_id": email["field_id"],
                        "values": [{"value": "a@y.test", "enum_id": work}],
                    }
                ],
            }
        ],
        timeout=10,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["_embedded"]["contacts"][0]["name"] == "Ann Smith"
    one = session.patch(
        f"{sandbox.url}/api/v4/contacts/{row['id']}", json={"name": "Ann B"}, timeout=10
    )
    assert one.status_code == 200 and one.json()["id"] == row["id"]
    contact = session.get(f"{sandbox.url}/api/v4/contacts/{row['id']}", timeout=10).json()
    assert contact["name"] == "Ann B"
    assert contact["custom_fields_values"][0]["values"][0]["value"] == "a@y.test"
    # API writes are reported by webhook like any other change (delivered in the background).
    deliveries = sandbox.control("GET", "/deliveries")
    assert len(deliveries) == 3


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "not a list"}, 400, "InvalidValue"),
        (
            [{"custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]}],
            400,
            "NotSupportedChoice",
        ),
        (
            [
                {
                    "custom_fields_values": [
                        {"field_code": "EMAIL", "values": [{"value": "x", "enum_code": "NOPE"}]}
                    ]
                }
            ],
            400,
            "NotSupportedChoice",
        ),
        ([{"name": "x"}] * 251, 422, None),
    ],
)
def test_invalid_writes_are_refused_whole(
    sandbox: Sandbox, body: Any, status: int, code: str | None
) -> None:
    resp = api(sandbox).post(f"{sandbox.url}/api/v4/contacts", json=body, timeout=10)
    problem = assert_problem(
        resp, status, "Bad Request" if status == 400 else "Unprocessable Entity"
    )
    if code:
        assert problem["validation-errors"][0]["errors"][0]["code"] == code
    assert sandbox.control("GET", f"/accounts/{sandbox.account_id}")["contacts"] == 0


def test_updating_an_unknown_contact_is_refused(sandbox: Sandbox) -> None:
    resp = api(sandbox).patch(
        f"{sandbox.url}/api/v4/contacts", json=[{"id": 1, "name": "x"}], timeout=10
    )
    assert_problem(resp, 400, "Bad Request")
