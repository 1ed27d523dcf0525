"""The Unisender emulator's own fidelity: documented rules a careless client would break."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sandbox.unisender import SandboxConfig, create_app
from sandbox.unisender.forms import parse_php_form
from tests.unit.unisender.conftest import SandboxServer

pytestmark = pytest.mark.unit


def _form(key: str, **args: Any) -> dict[str, Any]:
    return {"format": "json", "api_key": key, **args}


def _import(sandbox: SandboxServer, key: str, names: list[str], rows: list[list[str]]) -> Any:
    data: dict[str, str] = {f"field_names[{i}]": n for i, n in enumerate(names)}
    for r, row in enumerate(rows):
        data.update({f"data[{r}][{c}]": v for c, v in enumerate(row)})
    return sandbox.api("importContacts", _form(key, **data))


def test_php_bracket_parsing() -> None:
    parsed = parse_php_form(
        [("a[0][1]", "x"), ("a[0][0]", "w"), ("b[]", "1"), ("b[]", "2"), ("c[k]", "z"), ("d", "v")]
    )
    assert parsed == {
        "a": {"0": {"1": "x", "0": "w"}},
        "b": {"0": "1", "1": "2"},
        "c": {"k": "z"},
        "d": "v",
    }


def test_unknown_key_is_an_envelope_on_http_200(sandbox: SandboxServer) -> None:
    body = sandbox.api("getLists", _form("nope"))
    assert body["code"] == "invalid_api_key"
    assert body["error"]


def test_mixing_query_and_body_arguments_is_the_documented_error(
    sandbox: SandboxServer, api_key: str
) -> None:
    response = sandbox.http.post(
        f"{sandbox.api_url}/getLists?api_key={api_key}", data={"format": "json"}, timeout=5
    )
    assert response.json()["error"] == "Call to a member function getMessage() on boolean"
    # The official PHP wrapper's `?format=json` plus a body is accepted.
    response = sandbox.http.post(
        f"{sandbox.api_url}/getLists?format=json", data={"api_key": api_key}, timeout=5
    )
    assert response.json() == {"result": []}


def test_get_with_query_arguments_works_but_is_logged(sandbox: SandboxServer, api_key: str) -> None:
    response = sandbox.http.get(f"{sandbox.url}/en/api/getLists", params=_form(api_key), timeout=5)
    assert response.json() == {"result": []}
    assert sandbox.calls(api_key)["log"][-1]["api_key_in"] == "query"


def test_unknown_method_and_language(sandbox: SandboxServer, api_key: str) -> None:
    assert sandbox.api("getList", _form(api_key))["code"] == "unknown_method"
    response = sandbox.http.post(f"{sandbox.url}/de/api/getLists", data=_form(api_key), timeout=5)
    assert response.status_code == 404


def test_missing_format_json_is_not_json(sandbox: SandboxServer, api_key: str) -> None:
    response = sandbox.http.post(f"{sandbox.api_url}/getLists", data={"api_key": api_key})
    with pytest.raises(ValueError):
        response.json()


def test_duplicate_list_title_is_an_error(sandbox: SandboxServer, api_key: str) -> None:
    assert "id" in sandbox.api("createList", _form(api_key, title="T"))["result"]
    assert sandbox.api("createList", _form(api_key, title="T"))["code"] == "unspecified"


def test_update_and_delete_list(sandbox: SandboxServer, api_key: str) -> None:
    list_id = sandbox.api("createList", _form(api_key, title="A"))["result"]["id"]
    sandbox.api("createList", _form(api_key, title="B"))
    assert sandbox.api("updateList", _form(api_key, list_id=list_id))["code"] == "invalid_arg"
    assert sandbox.api("updateList", _form(api_key, list_id=list_id, title="B"))["error"]
    assert sandbox.api("updateList", _form(api_key, list_id=list_id, title="C")) == {"result": {}}
    assert sandbox.api("deleteList", _form(api_key, list_id=list_id)) == {"result": {}}
    titles = [lst["title"] for lst in sandbox.api("getLists", _form(api_key))["result"]]
    assert titles == ["B"]


@pytest.mark.parametrize("name", ["1abc", "my-field", "with space", "Имя", "email", "Tags", ""])
def test_create_field_rejects_bad_names(sandbox: SandboxServer, api_key: str, name: str) -> None:
    body = sandbox.api("createField", _form(api_key, name=name, type="string"))
    assert body["code"] == "invalid_arg"


def test_create_field_accepts_good_names_once(sandbox: SandboxServer, api_key: str) -> None:
    assert "id" in sandbox.api("createField", _form(api_key, name="City_2", type="text"))["result"]
    assert sandbox.api("createField", _form(api_key, name="City_2", type="text"))["error"]
    assert sandbox.api("createField", _form(api_key, name="X", type="blob"))["error"]


def test_import_rejects_more_than_500_rows(sandbox: SandboxServer, api_key: str) -> None:
    rows = [[f"p{i}@example.com"] for i in range(501)]
    assert _import(sandbox, api_key, ["email"], rows)["code"] == "invalid_arg"
    assert _import(sandbox, api_key, ["email"], rows[:500])["result"]["inserted"] == 500


def test_import_column_rules(sandbox: SandboxServer, api_key: str) -> None:
    assert _import(sandbox, api_key, ["Name"], [["x"]])["code"] == "invalid_arg"
    assert _import(sandbox, api_key, ["email", "name"], [["a@x.ru", "x"]])["code"] == "invalid_arg"
    assert _import(sandbox, api_key, ["email", "Name"], [["a@x.ru", "x"]])["result"]["total"] == 1


def test_import_list_ids_must_be_comma_separated(sandbox: SandboxServer, api_key: str) -> None:
    list_id = sandbox.api("createList", _form(api_key, title="L"))["result"]["id"]
    data = {
        "field_names[0]": "email",
        "field_names[1]": "email_list_ids",
        "data[0][0]": "a@x.ru",
        "data[0][1][0]": str(list_id),
    }
    assert sandbox.api("importContacts", _form(api_key, **data))["code"] == "invalid_arg"
    unknown = _import(sandbox, api_key, ["email", "email_list_ids"], [["a@x.ru", "999999"]])
    assert unknown["code"] == "invalid_arg"


def test_import_cannot_change_an_unsubscribed_status(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(
        lists=["L"],
        contacts=[
            {"email": "gone@x.ru", "status": "unsubscribed", "lists": ["L"]},
            {"email": "on@x.ru", "status": "active"},
        ],
    )
    body = _import(
        sandbox, key, ["email", "email_status"], [["gone@x.ru", "active"], ["on@x.ru", "inactive"]]
    )
    assert body["result"]["updated"] == 2
    contacts = {c["email"]: c["status"] for c in sandbox.state(key)["contacts"]}
    assert contacts == {"gone@x.ru": "unsubscribed", "on@x.ru": "inactive"}


def test_import_counters_and_role_addresses(sandbox: SandboxServer, api_key: str) -> None:
    _import(sandbox, api_key, ["email"], [["old@x.ru"]])
    rows = [["old@x.ru"], ["new@x.ru"], ["no-reply@x.ru"], ["Postmaster@x.ru"], ["bad@"]]
    result = _import(sandbox, api_key, ["email"], rows)["result"]
    assert {k: result[k] for k in ("total", "inserted", "updated", "invalid", "new_emails")} == {
        "total": 5,
        "inserted": 1,
        "updated": 1,
        "invalid": 3,
        "new_emails": 2,
    }
    assert [(e["index"], e["code"]) for e in result["log"]] == [
        (2, "role_email"),
        (3, "role_email"),
        (4, "invalid_email"),
    ]


def test_exclude_and_unsubscribe_semantics(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["L"], contacts=[{"email": "p@x.ru", "lists": ["L"]}])
    list_id = sandbox.state(key)["lists"][0]["id"]
    args = _form(key, contact_type="email", contact="p@x.ru", list_ids=str(list_id))
    assert sandbox.api("unsubscribe", args) == {"result": {}}
    contact = sandbox.control("GET", f"/keys/{key}/contacts/p@x.ru")
    assert (contact["status"], contact["lists"][0]["status"]) == ("new", "unsubscribed")
    assert sandbox.api("exclude", args) == {"result": {}}
    assert sandbox.api("exclude", args) == {
        "error": 'Contact "p@x.ru" not found',
        "code": "unspecified",
        "result": "",
    }
    bad = _form(key, contact_type="mail", contact="p@x.ru")
    assert sandbox.api("exclude", bad)["code"] == "invalid_arg"


def test_subscribe_double_optin(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["L"])
    list_id = sandbox.state(key)["lists"][0]["id"]
    args = _form(key, list_ids=str(list_id), **{"fields[email]": "s@x.ru", "fields[Name]": "S"})
    assert "no confirmation letters" in sandbox.api("subscribe", args)["error"]
    body = sandbox.api("subscribe", {**args, "double_optin": "3"})
    assert int(body["result"]["person_id"]) > 0
    contact = sandbox.control("GET", f"/keys/{key}/contacts/s@x.ru")
    assert (contact["status"], contact["fields"], len(contact["lists"])) == (
        "new",
        {"Name": "S"},
        1,
    )


def test_is_contact_in_lists(sandbox: SandboxServer) -> None:
    key = sandbox.new_key(lists=["A", "B"], contacts=[{"email": "p@x.ru", "lists": ["A"]}])
    a, b = (lst["id"] for lst in sandbox.state(key)["lists"])

    def ask(condition: str) -> Any:
        args = _form(key, email="p@x.ru", list_ids=f"{a},{b}", condition=condition)
        return sandbox.api("isContactInLists", args)["result"]

    assert (ask("or"), ask("and")) == (True, False)


def test_rate_limit_per_key(sandbox: SandboxServer, api_key: str) -> None:
    other = sandbox.new_key()
    sandbox.configure(rate_limit_per_min=3)
    for _ in range(3):
        assert "result" in sandbox.api("getLists", _form(api_key))
    assert sandbox.api("getLists", _form(api_key))["code"] == "api_call_limit_exceeded_for_api_key"
    assert "result" in sandbox.api("getLists", _form(other))


def test_faults_for_n_calls_only_for_one_method(sandbox: SandboxServer, api_key: str) -> None:
    sandbox.fault(kind="outage", status=500, count=1, method="getFields")
    assert "result" in sandbox.api("getLists", _form(api_key))
    response = sandbox.http.post(f"{sandbox.api_url}/getFields", data=_form(api_key), timeout=5)
    assert response.status_code == 500
    assert "result" in sandbox.api("getFields", _form(api_key))


def test_latency_fault_and_clearing(sandbox: SandboxServer, api_key: str) -> None:
    fault = sandbox.fault(kind="latency", ms=300)
    started = time.monotonic()
    sandbox.api("getLists", _form(api_key))
    assert time.monotonic() - started >= 0.3
    sandbox.control("DELETE", f"/faults/{fault['id']}")
    assert sandbox.control("GET", "/faults") == {"faults": []}


def test_call_log_counts_and_reset(sandbox: SandboxServer, api_key: str) -> None:
    _import(sandbox, api_key, ["email"], [["a@x.ru"], ["b@x.ru"]])
    calls = sandbox.calls(api_key)
    assert calls["counts"] == {"importContacts": 1}
    assert calls["log"][0]["rows"] == 2
    assert sandbox.control("DELETE", f"/keys/{api_key}/calls")["counts"] == {}


def test_environment_configures_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_UNISENDER_KEYS", "first, second")
    monkeypatch.setenv("SANDBOX_UNISENDER_RATE_LIMIT_PER_MIN", "1")
    monkeypatch.setenv("SANDBOX_UNISENDER_LATENCY_MS", "5")
    app = create_app()
    web = app.test_client()
    assert web.get("/_sandbox/keys").get_json() == {"keys": ["first", "second"]}
    assert web.get("/_sandbox/config").get_json()["latency_ms"] == 5
    form = {"format": "json", "api_key": "second"}
    assert web.post("/ru/api/getLists", data=form).get_json() == {"result": []}
    limited = web.post("/ru/api/getLists", data=form).get_json()
    assert limited["code"] == "api_call_limit_exceeded_for_api_key"
    web.post("/_sandbox/reset")
    assert web.post("/ru/api/getLists", data=form).get_json() == {"result": []}
    assert SandboxConfig.from_env({}).rate_limit_per_min == 1200


def test_control_api_errors_are_json(sandbox: SandboxServer) -> None:
    response = sandbox.http.post(f"{sandbox.url}/_sandbox/faults", json={"kind": "bogus"})
    assert response.status_code == 400
    assert "kind must be one of" in response.json()["error"]
    assert sandbox.http.get(f"{sandbox.url}/_sandbox/keys/none").status_code == 404
