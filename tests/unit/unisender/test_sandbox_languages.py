"""Contract: `/{LANG}/api/` picks the language of the `error` text; codes never change (issue 12).

Docs: "LANG - the language of API server messages, ru, en, it are possible at the moment"; the
official PHP wrapper also allows `ua`. Whether each message is translated is [unverified]; the
emulator translates them, so a client that branches on English text on `/ru/api` fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.unisender.conftest import SandboxServer

pytestmark = pytest.mark.unit

LANGS = ["en", "ru", "ua", "it"]


def _form(key: str, **args: Any) -> dict[str, Any]:
    return {"format": "json", "api_key": key, **args}


def _call(sandbox: SandboxServer, lang: str, method: str, form: dict[str, Any]) -> Any:
    response = sandbox.http.post(f"{sandbox.url}/{lang}/api/{method}", data=form, timeout=5)
    assert response.status_code == 200, (lang, response.text)
    return response.json()


@pytest.mark.parametrize("lang", LANGS)
def test_every_documented_language_answers(sandbox: SandboxServer, api_key: str, lang: str) -> None:
    created = _call(sandbox, lang, "createList", _form(api_key, title=f"L {lang}"))
    assert isinstance(created["result"]["id"], int)
    titles = [lst["title"] for lst in _call(sandbox, lang, "getLists", _form(api_key))["result"]]
    assert titles == [f"L {lang}"]


def test_same_code_different_text(sandbox: SandboxServer, api_key: str) -> None:
    errors = {
        lang: _call(sandbox, lang, "getContact", _form(api_key, email="nobody@x.ru"))
        for lang in LANGS
    }
    assert {e["code"] for e in errors.values()} == {"unspecified"}
    assert errors["en"]["error"] == 'Contact "nobody@x.ru" not found'
    assert errors["ru"]["error"] == 'Контакт "nobody@x.ru" не найден'
    assert "не знайдено" in errors["ua"]["error"]
    assert "non trovato" in errors["it"]["error"]
    # The English "not found" is not in the other languages: match on `code` first.
    assert all("not found" not in errors[lang]["error"] for lang in ("ru", "ua", "it"))


@pytest.mark.parametrize("lang", LANGS)
def test_exclude_not_found_keeps_its_envelope(
    sandbox: SandboxServer, api_key: str, lang: str
) -> None:
    body = _call(sandbox, lang, "exclude", _form(api_key, contact_type="email", contact="n@x.ru"))
    assert set(body) == {"error", "code", "result"}
    assert (body["code"], body["result"]) == ("unspecified", "")


@pytest.mark.parametrize("lang", LANGS)
def test_wrong_key_and_method_codes(sandbox: SandboxServer, api_key: str, lang: str) -> None:
    assert _call(sandbox, lang, "getLists", _form("nope"))["code"] == "invalid_api_key"
    assert _call(sandbox, lang, "getList", _form(api_key))["code"] == "unknown_method"


def test_documented_messages_without_a_code_stay_english(
    sandbox: SandboxServer, api_key: str
) -> None:
    for lang in LANGS:
        response = sandbox.http.post(
            f"{sandbox.url}/{lang}/api/getLists?api_key={api_key}",
            data={"format": "json"},
            timeout=5,
        )
        assert response.json()["error"] == "Call to a member function getMessage() on boolean"


def test_import_log_speaks_the_language(sandbox: SandboxServer, api_key: str) -> None:
    form = _form(api_key, **{"field_names[0]": "email", "data[0][0]": "info@x.ru"})
    en = _call(sandbox, "en", "importContacts", form)["result"]["log"][0]
    ru = _call(sandbox, "ru", "importContacts", form)["result"]["log"][0]
    assert en["code"] == ru["code"] == "role_email"
    assert en["message"] != ru["message"]
    assert "не импортирован" in ru["message"]


def test_unknown_language_is_refused_with_a_json_body(sandbox: SandboxServer, api_key: str) -> None:
    response = sandbox.http.post(f"{sandbox.url}/de/api/getLists", data=_form(api_key), timeout=5)
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "unspecified"
    assert all(lang in body["error"] for lang in LANGS)
