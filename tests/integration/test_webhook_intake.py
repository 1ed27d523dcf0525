"""POST /webhook loaded the way functions-framework loads it, against real MySQL and beanstalkd."""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import functions_framework
import pytest

from shared.db import Database
from shared.jobs import ContactEventsJob
from shared.queue import get_queue
from shared.webhook_intake import ensure_webhook_secret

pytestmark = pytest.mark.integration

SOURCE = str(Path(__file__).resolve().parents[2] / "functions" / "webhook" / "main.py")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

_ids = itertools.count(7_300_000_000 + secrets.randbelow(10**6) * 100)


class Hook:
    def __init__(self, db: Database) -> None:
        self.account_id = next(_ids)
        db.execute(
            "INSERT INTO accounts (id, name, host) VALUES (%s, %s, %s)",
            (self.account_id, f"wh{self.account_id}", f"wh{self.account_id}.amocrm.ru"),
        )
        self.secret = ensure_webhook_secret(db, self.account_id)
        self.client = functions_framework.create_app("webhook", SOURCE).test_client()

    @property
    def path(self) -> str:
        return f"/webhook/{self.account_id}/{self.secret}"

    def post(self, pairs: list[tuple[str, str]] | str, path: str | None = None) -> Any:
        body = pairs if isinstance(pairs, str) else urlencode(pairs)
        return self.client.post(path or self.path, data=body, headers=FORM)

    def queued(self) -> list[ContactEventsJob]:
        queue = get_queue()
        jobs: list[ContactEventsJob] = []
        client = queue.connect(watch=ContactEventsJob.tube)
        try:
            while True:
                try:
                    raw = client.reserve(timeout=0)
                except Exception:
                    return jobs
                jobs.append(ContactEventsJob.model_validate_json(raw.body))
                client.delete(raw)
        finally:
            client.close()


@pytest.fixture
def hook(db: Database, beanstalkd: Any) -> Hook:
    return Hook(db)


def account(hook: Hook) -> list[tuple[str, str]]:
    return [("account[subdomain]", "acme"), ("account[id]", str(hook.account_id))]


def add(
    index: str, contact_id: str, email: str = "a@x.ru", enum: str = "1"
) -> list[tuple[str, str]]:
    p = f"contacts[add][{index}]"
    return [
        (f"{p}[id]", contact_id),
        (f"{p}[name]", "N"),
        (f"{p}[type]", "contact"),
        (f"{p}[custom_fields][0][code]", "EMAIL"),
        (f"{p}[custom_fields][0][values][0][value]", email),
        (f"{p}[custom_fields][0][values][0][enum]", enum),
    ]


@pytest.mark.parametrize("account_id", ["²", "١٢", "9" * 5000, str(2**63), "-1", "1e3"])
def test_a_path_account_id_that_is_not_a_bigint_is_a_json_404(hook: Hook, account_id: str) -> None:
    resp = hook.post(account(hook), path=f"/webhook/{account_id}/{hook.secret}")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "webhook_not_found"
    assert hook.queued() == []


@pytest.mark.parametrize(
    "pairs",
    [
        add("0", "9" * 5000),
        add("0", "²"),
        add("0", str(2**64)),
        add("9" * 5000, "5"),
        add("²", "5"),
    ],
    ids=["id-5000-digits", "id-superscript", "id-past-bigint", "index-5000-digits", "index-sup"],
)
def test_non_ascii_or_unbounded_numbers_are_never_a_500(hook: Hook, pairs: Any) -> None:
    resp = hook.post([*account(hook), *pairs])
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert resp.get_json() is not None
    assert all(e.contact_id < 2**63 for job in hook.queued() for e in job.events)


def test_an_unreadable_enum_keeps_the_address_with_an_unknown_type(hook: Hook) -> None:
    resp = hook.post([*account(hook), *add("0", "5", enum="²")])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (job,) = hook.queued()
    emails = job.events[0].emails
    assert emails is not None and emails[0].enum_id is None and emails[0].enum_code is None
