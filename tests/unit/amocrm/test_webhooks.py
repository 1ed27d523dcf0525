"""Webhook subscriptions through the client, and the hooks the sandbox delivers."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

import pytest

from shared.amocrm.models import EMAIL_CODE, PHONE_CODE, enum_codes_by_id

from .conftest import Receiver, Sandbox

pytestmark = pytest.mark.unit

EVENTS = ["add_contact", "update_contact", "delete_contact", "restore_contact"]


def test_subscribe_list_delete(sandbox: Sandbox) -> None:
    client = sandbox.client()
    assert client.list_webhooks() == []
    hook = client.subscribe_webhook("https://amosync.test/hook?k=1", EVENTS[:2], sort=5)
    assert hook.destination == "https://amosync.test/hook?k=1" and hook.settings == EVENTS[:2]
    assert hook.account_id == sandbox.account_id and not hook.disabled
    client.subscribe_webhook("https://other.test/h", ["add_lead"])
    again = client.subscribe_webhook("https://amosync.test/hook?k=1", EVENTS)
    assert again.id == hook.id and again.settings == EVENTS  # same destination: updated
    assert len(client.list_webhooks()) == 2
    (only,) = client.list_webhooks("https://amosync.test/hook?k=1")
    assert only.settings == EVENTS
    client.delete_webhook("https://amosync.test/hook?k=1")
    assert [h.destination for h in client.list_webhooks()] == ["https://other.test/h"]
    client.delete_webhook("https://amosync.test/hook?k=1")  # already gone: not an error
    deletes = [e for e in sandbox.requests_log() if e["method"] == "DELETE"]
    assert [e["status"] for e in deletes] == [204, 404]


def form_of(hit: dict[str, object]) -> list[tuple[str, str]]:
    return parse_qsl(str(hit["raw"]), keep_blank_values=True)


def test_add_contact_hook_has_the_amocrm_shape(sandbox: Sandbox, receiver: Receiver) -> None:
    client = sandbox.client()
    client.subscribe_webhook(f"{receiver.url}/hook?k=secret", EVENTS)
    sandbox.control(
        "POST",
        f"/accounts/{sandbox.account_id}/contacts",
        json={
            "name": "Tom & Jerry <Ltd>",
            "emails": [{"value": "tom@x.test", "enum": "PRIV"}],
            "phones": [{"value": "+79991234567", "enum": "MOB"}],
        },
    )
    (hit,) = receiver.received
    assert hit["method"] == "POST" and hit["args"] == {"k": "secret"}
    assert hit["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert hit["headers"]["User-Agent"] == "amoCRM-WebHook-client/1.0"
    pairs = form_of(hit)
    assert [k for k, _ in pairs[:3]] == [
        "account[subdomain]",
        "account[id]",
        "account[_links][self]",
    ]
    form = dict(pairs)
    assert form["account[id]"] == str(sandbox.account_id)
    assert form["account[_links][self]"] == "https://sandbox1.amocrm.ru"
    assert form["contacts[add][0][name]"] == "Tom &amp; Jerry &lt;Ltd&gt;"
    assert form["contacts[add][0][type]"] == "contact"
    for key in (
        "id",
        "responsible_user_id",
        "date_create",
        "last_modified",
        "created_user_id",
        "modified_user_id",
        "account_id",
        "created_at",
        "updated_at",
    ):
        assert form[f"contacts[add][0][{key}]"].isdigit(), key
    fields = sandbox.client().get_contact_custom_fields()
    by_code = {form[f"contacts[add][0][custom_fields][{i}][code]"]: i for i in range(2)}
    email = f"contacts[add][0][custom_fields][{by_code['EMAIL']}]"
    assert form[f"{email}[name]"] == "Email"
    assert form[f"{email}[values][0][value]"] == "tom@x.test"
    # The enum is the account's enum *id*, resolvable only through the custom-fields API.
    assert enum_codes_by_id(fields, EMAIL_CODE)[int(form[f"{email}[values][0][enum]"])] == "PRIV"
    phone = f"contacts[add][0][custom_fields][{by_code['PHONE']}]"
    assert enum_codes_by_id(fields, PHONE_CODE)[int(form[f"{phone}[values][0][enum]"])] == "MOB"
    deliveries = sandbox.control("GET", "/deliveries")
    assert [d["status"] for d in deliveries] == [200]


def test_bulk_changes_arrive_in_one_post(sandbox: Sandbox, receiver: Receiver) -> None:
    ids = sandbox.changes(add=[{"name": "a"}, {"name": "b"}], notify=False)["added"]
    sandbox.client().subscribe_webhook(f"{receiver.url}/hook", EVENTS)
    sandbox.changes(
        add=[{"name": "c", "emails": ["c@x.test"]}],
        add_companies=[{"name": "Acme LLC"}],
        update=[{"id": ids[0], "name": "a2", "emails": ["a2@x.test"]}],
        delete=[ids[1]],
    )
    (hit,) = receiver.received
    form = dict(form_of(hit))
    assert form["contacts[add][0][name]"] == "c"
    assert form["contacts[add][0][type]"] == "contact"
    assert form["contacts[add][1][name]"] == "Acme LLC"
    assert form["contacts[add][1][type]"] == "company"
    assert form["contacts[update][0][id]"] == str(ids[0])
    assert form["contacts[update][0][name]"] == "a2"
    assert form["contacts[delete][0][id]"] == str(ids[1])
    assert form["contacts[delete][0][type]"] == "contact"
    assert not [k for k in form if k.startswith("contacts[delete][0][name]")]


def test_notify_false_simulates_a_lost_webhook(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.client().subscribe_webhook(f"{receiver.url}/hook", EVENTS)
    sandbox.changes(add=[{"name": "quiet"}], notify=False)
    assert receiver.received == [] and sandbox.control("GET", "/deliveries") == []


def test_only_subscribed_events_are_sent_and_failures_recorded(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    sandbox.client().subscribe_webhook(f"{receiver.url}/hook", ["delete_contact"])
    (cid,) = sandbox.changes(add=[{"name": "x"}])["added"]
    assert receiver.received == []
    receiver.status = 500
    result = sandbox.control(
        "DELETE", f"/accounts/{sandbox.account_id}/contacts/{cid}", json={"notify": True}
    )
    assert [d["status"] for d in result["deliveries"]] == [500]
    assert dict(form_of(receiver.received[0]))["contacts[delete][0][id]"] == str(cid)
    restored = sandbox.control("POST", f"/accounts/{sandbox.account_id}/contacts/{cid}/restore")
    assert restored["deliveries"] == []


def test_async_delivery(sandbox: Sandbox, receiver: Receiver) -> None:
    sandbox.client().subscribe_webhook(f"{receiver.url}/hook", EVENTS)
    result = sandbox.changes(add=[{"name": "later"}], **{"async": True})
    assert len(result["deliveries"]) == 1
    deadline = time.monotonic() + 3
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dict(form_of(receiver.received[0]))["contacts[add][0][name]"] == "later"


def test_hooks_go_only_to_the_changed_account(sandbox: Sandbox, receiver: Receiver) -> None:
    other = sandbox.new_account(subdomain="other")
    sandbox.client(other).subscribe_webhook(f"{receiver.url}/other", EVENTS)
    sandbox.client().subscribe_webhook(f"{receiver.url}/mine", EVENTS)
    sandbox.changes(other, add=[{"name": "o"}])
    (hit,) = receiver.received
    assert hit["path"] == "/other"
    assert dict(form_of(hit))["account[subdomain]"] == "other"
