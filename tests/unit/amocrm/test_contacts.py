"""Contacts, account and custom fields read through the client from the sandbox."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
import requests

from shared.amocrm import BadRequest
from shared.amocrm.models import EMAIL_CODE, enum_codes_by_id

from .conftest import Sandbox

pytestmark = pytest.mark.unit


def contact_requests(sandbox: Sandbox) -> list[dict[str, object]]:
    return [e for e in sandbox.requests_log() if e["path"] == "/api/v4/contacts"]


def test_paging_follows_next_until_absent(sandbox: Sandbox) -> None:
    sandbox.changes(generate=501, notify=False)
    contacts = list(sandbox.client().iter_contacts())
    assert len({c.id for c in contacts}) == 501
    log = contact_requests(sandbox)
    assert len(log) == 3  # 250 + 250 + 1, the last page has no `next`
    pages = [parse_qs(str(e["query"])) for e in log]
    assert [p["limit"] for p in pages] == [["250"]] * 3
    assert [p.get("page") for p in pages] == [None, ["2"], ["3"]]


def test_full_last_page_then_204_stops(sandbox: Sandbox) -> None:
    sandbox.changes(generate=500, notify=False)
    pages = list(sandbox.client().iter_contact_pages())
    assert [len(p.contacts) for p in pages] == [250, 250]
    log = contact_requests(sandbox)
    assert [e["status"] for e in log] == [200, 200, 204]


def test_empty_account_is_a_204_not_an_error(sandbox: Sandbox) -> None:
    assert list(sandbox.client().iter_contacts()) == []
    assert [e["status"] for e in contact_requests(sandbox)] == [204]
    raw = requests.get(
        f"{sandbox.url}/api/v4/contacts",
        headers={"Authorization": f"Bearer {sandbox.tokens()['access_token']}"},
        timeout=5,
    )
    assert raw.status_code == 204 and raw.content == b""


def test_enum_code_and_the_older_enum_key_both_parse(sandbox: Sandbox) -> None:
    sandbox.configure(legacy_enum_every=2)
    spec = {
        "emails": [{"value": "w@x.test", "enum": "WORK"}, {"value": "p@x.test", "enum": "PRIV"}]
    }
    sandbox.changes(add=[{"name": f"c{i}", **spec} for i in range(4)], notify=False)
    raw = requests.get(
        f"{sandbox.url}/api/v4/contacts",
        headers={"Authorization": f"Bearer {sandbox.tokens()['access_token']}"},
        timeout=5,
    ).json()
    shapes = {
        tuple(sorted(v))
        for c in raw["_embedded"]["contacts"]
        for f in c["custom_fields_values"]
        for v in f["values"]
    }
    assert shapes == {("enum", "enum_id", "value"), ("enum_code", "enum_id", "value")}
    for contact in sandbox.client().iter_contacts():
        assert [(v.value, v.enum_code) for v in contact.email_values()] == [
            ("w@x.test", "WORK"),
            ("p@x.test", "PRIV"),
        ]
        assert all(v.enum_id for v in contact.email_values())


def test_contact_without_fields_has_null_custom_fields(sandbox: Sandbox) -> None:
    sandbox.changes(add=[{"name": "", "first_name": "", "last_name": ""}], notify=False)
    (contact,) = sandbox.client().iter_contacts()
    assert contact.email_values() == [] and contact.name == ""


def test_get_contact_by_id_handles_204_and_trash(sandbox: Sandbox) -> None:
    added = sandbox.changes(add=[{"name": "Ivan", "emails": ["ivan@x.test"]}], notify=False)
    (cid,) = added["added"]
    client = sandbox.client()
    contact = client.get_contact(cid)
    assert contact is not None and contact.name == "Ivan"
    assert client.get_contact(cid + 1000) is None
    sandbox.changes(delete=[cid], notify=False)
    assert client.get_contact(cid) is None
    assert [c.id for c in client.iter_contacts(only_deleted=True)] == [cid]
    assert all(c.is_deleted for c in client.iter_contacts(only_deleted=True))
    sandbox.changes(restore=[cid], notify=False)
    assert client.get_contact(cid) is not None


@pytest.mark.parametrize("filter_enabled", [True, False])
def test_incremental_read_stops_below_watermark(sandbox: Sandbox, filter_enabled: bool) -> None:
    now = int(time.time())
    sandbox.control(
        "PATCH", f"/accounts/{sandbox.account_id}", json={"api_filter_enabled": filter_enabled}
    )
    old = [{"name": f"old{i}", "updated_at": now - 10_000 - i} for i in range(300)]
    fresh = [{"name": f"new{i}", "updated_at": now - i} for i in range(5)]
    edge = [
        {"name": "in-overlap", "updated_at": now - 130},
        {"name": "out", "updated_at": now - 200},
    ]
    sandbox.changes(add=old + fresh + edge, notify=False)
    got = list(sandbox.client().iter_contacts_updated_since(now - 100, overlap=60))
    assert [c.name for c in got] == [f"new{i}" for i in range(5)] + ["in-overlap"]
    log = contact_requests(sandbox)
    # Filter on: one short page. Filter silently ignored: still one page, stopped early.
    assert len(log) == 1
    query = parse_qs(str(log[0]["query"]))
    assert query["order[updated_at]"] == ["desc"]
    assert query["filter[updated_at][from]"] == [str(now - 160)]


def test_custom_fields_are_paged_and_enum_ids_differ_per_account(sandbox: Sandbox) -> None:
    for i in range(60):
        sandbox.control(
            "POST", f"/accounts/{sandbox.account_id}/custom_fields", json={"name": f"f{i}"}
        )
    other = sandbox.new_account(subdomain="other")
    first = sandbox.client().get_contact_custom_fields()
    second = sandbox.client(other).get_contact_custom_fields()
    assert len(first) == 63 and len(second) == 3
    assert len([e for e in sandbox.requests_log() if "custom_fields" in str(e["path"])]) == 3
    map1, map2 = enum_codes_by_id(first, EMAIL_CODE), enum_codes_by_id(second, EMAIL_CODE)
    assert sorted(map1.values()) == sorted(map2.values()) == ["OTHER", "PRIV", "WORK"]
    assert not set(map1) & set(map2)
    sandbox.changes(other, add=[{"emails": [{"value": "a@b.test", "enum": "PRIV"}]}], notify=False)
    (contact,) = sandbox.client(other).iter_contacts()
    assert map2[contact.email_values()[0].enum_id or 0] == "PRIV"


def test_account_info_and_filter_flag(sandbox: Sandbox) -> None:
    account = sandbox.client().get_account()
    assert account.id == sandbox.account_id
    assert account.subdomain == "sandbox1"
    assert account.is_api_filter_enabled is True


def test_page_size_over_250_is_refused(sandbox: Sandbox) -> None:
    client = sandbox.client()
    with pytest.raises(ValueError):
        list(client.iter_contacts(limit=251))
    with pytest.raises(BadRequest):
        client._request("GET", "/api/v4/contacts", params={"limit": 500})
