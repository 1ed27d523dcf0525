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
from shared.jobqueue import get_queue
from shared.jobs import ContactEventsJob
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
def test_non_ascii_or_unbounded_numbers_skip_their_entity(hook: Hook, pairs: Any) -> None:
    resp = hook.post([*account(hook), *pairs, *add("7", "42", "good@x.ru")])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["skipped"] == 1 and resp.get_json()["events"] == 1
    assert [e.contact_id for job in hook.queued() for e in job.events] == [42]


def test_an_unreadable_enum_keeps_the_address_with_an_unknown_type(hook: Hook) -> None:
    resp = hook.post([*account(hook), *add("0", "5", enum="²")])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (job,) = hook.queued()
    emails = job.events[0].emails
    assert emails is not None and emails[0].enum_id is None and emails[0].enum_code is None


def test_one_malformed_entity_is_skipped_and_logged_the_rest_is_queued(
    hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = [
        *account(hook),
        *add("0", "1", "first@x.ru"),
        *add("1", "abc", "secret.person@x.ru"),
        ("contacts[update][0][id]", "2"),
        ("contacts[update][0][name]", "Private Name"),
        ("contacts[update][0][updated_at]", "not-a-time"),
        ("contacts[frobnicate][0][id]", "3"),  # an action amoCRM may add one day
        ("contacts[delete][0][id]", "4"),
    ]
    with caplog.at_level("WARNING", logger="shared.webhook_intake"):
        resp = hook.post(pairs)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"status": "queued", "events": 2, "ignored": 1, "skipped": 2}
    assert [(e.action, e.contact_id) for j in hook.queued() for e in j.events] == [
        ("add", 1),
        ("delete", 4),
    ]
    skips = [r for r in caplog.records if r.getMessage() == "webhook entity skipped"]
    assert [(r.action, r.contact_id) for r in skips] == [("add", None), ("update", 2)]  # type: ignore[attr-defined]
    logged = " ".join(f"{r.__dict__}" for r in skips)
    assert "secret.person" not in logged and "Private Name" not in logged
    assert "not-a-time" not in logged


@pytest.mark.parametrize(
    "pairs",
    [
        [("contacts[add][0][id]", "1")],  # no account block
        [("account[id]", "1"), ("contacts[add][0][id]", "1")],  # another account
        [("account[id]", "{own}")],  # no contacts entities
        [("account[id]", "{own}"), ("leads[add][0][id]", "1")],
    ],
    ids=["no-account", "mismatch", "no-contacts", "leads"],
)
def test_a_body_that_is_not_this_accounts_contacts_webhook_is_a_400(
    hook: Hook, pairs: list[tuple[str, str]]
) -> None:
    pairs = [(k, v.replace("{own}", str(hook.account_id))) for k, v in pairs]
    resp = hook.post(pairs)
    assert resp.status_code == 400
    assert hook.queued() == []


def test_job_too_big_splits_the_post_and_skips_only_an_event_that_cannot_fit(
    hook: Hook, db: Database
) -> None:
    import greenstalk

    from shared.amocrm.webhooks import parse_webhook
    from shared.webhook_intake import accept_webhook

    class SmallQueue:
        """beanstalkd started with a small -z: refuses job bodies over 1500 bytes."""

        def __init__(self) -> None:
            self.jobs: list[ContactEventsJob] = []

        def put(self, job: ContactEventsJob) -> int:
            if len(job.model_dump_json()) > 1500:
                raise greenstalk.JobTooBigError([b"JOB_TOO_BIG"])
            self.jobs.append(job)
            return len(self.jobs)

    pairs = [*account(hook)]
    for i in range(10):
        pairs += add(str(i), str(100 + i), f"p{i}@x.ru")
    pairs += [("contacts[update][0][id]", "999"), ("contacts[update][0][name]", "N" * 255)]
    pairs += [
        (f"contacts[update][0][custom_fields][0][values][{j}][value]", f"{'y' * 60}{j}@x.ru")
        for j in range(20)
    ] + [("contacts[update][0][custom_fields][0][code]", "EMAIL")]
    assert len(parse_webhook(urlencode(pairs)).events) == 11
    queue = SmallQueue()
    accepted = accept_webhook(
        db,
        queue,  # type: ignore[arg-type]
        account_id=hook.account_id,
        secret=hook.secret,
        body=urlencode(pairs).encode(),
    )
    assert accepted.skipped == 1 and accepted.events == 10
    assert sorted(e.contact_id for j in queue.jobs for e in j.events) == list(range(100, 110))
