"""Contract: amoCRM clients nobody here wrote work against the emulator (issue 12 item 8).

So the emulator cannot drift into speaking only amosync's dialect, two public PyPI clients run
their main flows against it — listing and paging contacts, one contact, create and update,
contact custom fields:
- `amocrm-api-wrapper` (requests), pointed at the emulator by its own `crm_url` setting;
- `amocrm-api` (requests), which hard-codes `https://{subdomain}.amocrm.ru`, through a requests
  transport adapter that sends those URLs to the emulator instead (nothing of the client is
  patched). It asks for `custom_fields?limit=250`, which the emulator must accept and clamp.
Both are pinned in pyproject.toml's dev extras.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from amocrm.v2.interaction import GenericInteraction
from amocrm.v2.tokens import MemoryTokensStorage, TokenManager
from amocrm_api import AmoOAuthClient
from amocrm_api.errors import AmoException
from requests.adapters import HTTPAdapter

from .conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Sandbox

pytestmark = pytest.mark.unit

CONTACTS = 600  # 250 + 250 + 100: more than two full pages


@pytest.fixture
def filled(sandbox: Sandbox) -> Sandbox:
    sandbox.changes(generate=CONTACTS, notify=False)
    for n in range(60):  # with the 3 predefined fields: 63, more than one page of 50
        path = f"/accounts/{sandbox.account_id}/custom_fields"
        sandbox.control("POST", path, json={"name": f"Field {n}"})
    return sandbox


# --- amocrm-api-wrapper ---------------------------------------------------------------------


def wrapper_client(sandbox: Sandbox) -> AmoOAuthClient:
    tokens = sandbox.tokens()
    return AmoOAuthClient(
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        crm_url=sandbox.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
    )


def test_wrapper_lists_and_pages_contacts(filled: Sandbox) -> None:
    client = wrapper_client(filled)
    contacts: list[dict[str, Any]] = []
    page = 1
    while body := client.get_contacts(limit=250, page=page):  # {} on the 204 past the end
        contacts += body["_embedded"]["contacts"]
        page += 1
    assert page == 4  # 250 + 250 + 100, then the 204
    assert len({c["id"] for c in contacts}) == CONTACTS
    middle = client.get_contacts(limit=50, page=2)
    assert len(middle["_embedded"]["contacts"]) == 50
    assert "next" in middle["_links"] and "prev" in middle["_links"]
    one = client.get_contact(contacts[0]["id"])
    assert one["id"] == contacts[0]["id"]
    assert one["custom_fields_values"][0]["field_code"] == "EMAIL"
    assert client.get_account_info()["id"] == filled.account_id


def test_wrapper_reads_custom_fields(filled: Sandbox) -> None:
    client = wrapper_client(filled)
    first = client.get_contacts_custom_fields()
    second = client.get_contacts_custom_fields(page=2)
    items = first["_embedded"]["custom_fields"] + second["_embedded"]["custom_fields"]
    assert len(items) == 63
    email = next(f for f in items if f["code"] == "EMAIL")
    assert {e["value"] for e in email["enums"]} == {"WORK", "PRIV", "OTHER"}


def test_wrapper_creates_and_updates_contacts(sandbox: Sandbox) -> None:
    client = wrapper_client(sandbox)
    created = client.create_contacts(
        [
            {
                "name": "Ann Lee",
                "custom_fields_values": [
                    {
                        "field_code": "EMAIL",
                        "values": [{"value": "ann@x.test", "enum_code": "WORK"}],
                    }
                ],
            }
        ]
    )
    contact_id = created["_embedded"]["contacts"][0]["id"]
    client.update_contacts([{"id": contact_id, "name": "Ann Smith"}])
    contact = client.get_contact(contact_id)
    assert contact["name"] == "Ann Smith"
    assert contact["custom_fields_values"][0]["values"][0]["value"] == "ann@x.test"


def test_wrapper_sees_problem_json_for_an_unknown_route(sandbox: Sandbox) -> None:
    client = wrapper_client(sandbox)
    with pytest.raises(AmoException) as caught:
        client._send_api_request("get", f"{sandbox.url}/api/v4/no_such_entity")
    # Before, Flask's HTML page made the client fail on JSON decoding (reported as code 500).
    assert caught.value.code == 404
    assert caught.value.error_data["title"] == "Not Found"


# --- amocrm-api -----------------------------------------------------------------------------


class ToEmulator(HTTPAdapter):
    """Sends the client's https://{subdomain}.amocrm.ru/... requests to the emulator."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = urlsplit(base_url)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(str(request.url))
        request.url = parts._replace(scheme=self.base.scheme, netloc=self.base.netloc).geturl()
        return super().send(request, **kwargs)


def krukov(sandbox: Sandbox, path: str, field: str | None = None) -> GenericInteraction:
    tokens = sandbox.tokens()
    manager = TokenManager()
    storage = MemoryTokensStorage()
    manager(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        subdomain="sandbox1",
        redirect_url=REDIRECT_URI,
        storage=storage,
    )
    storage.save_tokens(tokens["access_token"], tokens["refresh_token"])
    session = requests.Session()
    session.mount("https://", ToEmulator(sandbox.url))
    return GenericInteraction(token_manager=manager, session=session, path=path, field=field)


def test_amocrm_api_pages_contacts_and_custom_fields(filled: Sandbox) -> None:
    contacts = list(krukov(filled, "contacts").get_all())
    assert len({c["id"] for c in contacts}) == CONTACTS
    # It sends custom_fields?limit=250 and follows `next`: all 63 fields, 50 per page.
    fields = list(krukov(filled, "contacts/custom_fields", "custom_fields").get_all())
    assert len(fields) == 63
    queries = [
        e["query"]
        for e in filled.requests_log("/api/v4/contacts/custom_fields")
        if e["status"] == 200
    ]
    assert queries and all("limit=250" in q for q in queries)


def test_amocrm_api_creates_reads_and_updates_a_contact(sandbox: Sandbox) -> None:
    contacts = krukov(sandbox, "contacts")
    created = contacts.create(
        {
            "name": "Bob Ray",
            "custom_fields_values": [
                {"field_code": "PHONE", "values": [{"value": "+79991234567", "enum_code": "MOB"}]}
            ],
        }
    )
    contacts.update(created["id"], {"name": "Bob Ray Jr"})
    contact = contacts.get(created["id"])
    assert contact["name"] == "Bob Ray Jr"
    phone = contact["custom_fields_values"][0]
    assert phone["field_code"] == "PHONE" and phone["values"][0]["enum_code"] == "MOB"
