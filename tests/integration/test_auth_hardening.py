"""/auth hardening (issue 18 #8, #9): the 409 before the code is spent, the stored host kept
against a foreign referer, and disable-hook replays that change nothing and tell the truth."""

from __future__ import annotations

from typing import Any

import pytest

from shared.accounts import get_account
from shared.db import Database
from shared.tokens import load_tokens
from tests.integration.test_tokens import AmoSandbox, amo, amo_server  # noqa: F401
from tests.integration.test_tokens_install import _hook, callback, client, consent, start  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_taken_name_is_a_409_before_the_code_is_spent(
    client: Any,  # noqa: F811
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    owner, intruder = amo.new_account(), amo.new_account()
    assert callback(client, consent(amo, start(client, "held-name"), owner)).status_code == 200
    params = consent(amo, start(client, "held-name"), intruder)
    calls = len(amo.token_calls())
    resp = callback(client, params)
    assert resp.status_code == 409 and resp.json["error"]["code"] == "name_taken"
    assert len(amo.token_calls()) == calls, "the code was exchanged before the 409"
    assert get_account(db, intruder) is None
    # The code is still unspent: the same grant installs the account by the widget route.
    widget = callback(
        client,
        {"code": params["code"], "referer": params["referer"], "from_widget": "1"},
    )
    assert widget.status_code == 200, widget.data
    assert widget.json["account_id"] == intruder


def test_a_foreign_referer_does_not_overwrite_the_stored_host(
    client: Any,  # noqa: F811
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account()
    host = amo.world.account(account_id).host
    assert callback(client, consent(amo, start(client, "host-kept"), account_id)).status_code == 200
    # A well-formed amoCRM host that is not this account's: the token call still works in the
    # sandbox (AMOCRM_API_URL), so only the host rule can keep the stored host.
    resp = callback(
        client,
        {"code": amo.code(account_id), "referer": "someone-else.amocrm.ru", "from_widget": "1"},
    )
    assert resp.status_code == 200, resp.data
    account = get_account(db, account_id)
    assert account is not None and account.host == host


@pytest.mark.parametrize("referer", ["amocrm.ru", "{host}.", "xn--80ak6aa92e.amocrm.ru"])
def test_an_odd_referer_is_refused_before_the_code_is_exchanged(
    client: Any,  # noqa: F811
    amo: AmoSandbox,  # noqa: F811
    db: Database,
    referer: str,
) -> None:
    account_id = amo.new_account()
    host = amo.world.account(account_id).host
    assert (
        callback(client, consent(amo, start(client, f"odd-{account_id}"), account_id)).status_code
        == 200
    )
    calls = len(amo.token_calls())
    resp = callback(
        client,
        {"code": amo.code(account_id), "referer": referer.format(host=host), "from_widget": "1"},
    )
    assert resp.status_code == 400 and resp.json["error"]["code"] == "referer_not_allowed"
    assert len(amo.token_calls()) == calls
    account = get_account(db, account_id)
    assert account is not None and account.host == host


def test_disable_hook_replays_are_idempotent_and_say_known(
    client: Any,  # noqa: F811
    amo: AmoSandbox,  # noqa: F811
    db: Database,
) -> None:
    account_id = amo.new_account()
    assert callback(client, consent(amo, start(client, "replayed"), account_id)).status_code == 200
    answers = [client.get("/auth/disable", query_string=_hook(account_id)) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.json["known"] for r in answers] == [True, True, True]
    account = get_account(db, account_id)
    assert account is not None and account.status == "disabled"
    assert account.status_reason == "integration disabled in amoCRM"
    assert load_tokens(db, account_id) is None
    unknown = client.get("/auth/disable", query_string=_hook(account_id + 1))
    assert unknown.status_code == 200 and unknown.json["known"] is False
