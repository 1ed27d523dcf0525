"""Bulk generation and paging stay linear: counted in operations, not timed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sandbox.amocrm.state import ContactQuery, EntityRec

from .conftest import Sandbox

pytestmark = pytest.mark.unit

N = 20_000


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every list-view build, as the number of entities it scanned."""
    scanned: list[int] = []
    original = ContactQuery.build

    def counting(self: ContactQuery, entities: dict[int, EntityRec]) -> list[EntityRec]:
        scanned.append(len(entities))
        return original(self, entities)

    monkeypatch.setattr(ContactQuery, "build", counting)
    return scanned


def test_generate_without_notify_takes_no_snapshots(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies: list[object] = []
    real = copy.deepcopy

    def counting(obj: Any, *args: Any) -> Any:
        copies.append(obj)
        return real(obj, *args)

    monkeypatch.setattr(copy, "deepcopy", counting)
    added = sandbox.changes(generate=N, notify=False)["added"]
    assert len(added) == N == len(set(added))
    assert not any(isinstance(c, EntityRec) for c in copies)


def test_paging_builds_the_list_once_per_change_batch(sandbox: Sandbox, builds: list[int]) -> None:
    sandbox.changes(generate=N, notify=False)
    client = sandbox.client()
    pages = list(client.iter_contact_pages(order={"id": "asc"}))
    ids = [c.id for p in pages for c in p.contacts]
    assert len(pages) == N // 250 and len(ids) == N and ids == sorted(ids)
    # 81 requests (80 pages + the 204 after the full last one), one O(N) build between them.
    assert builds == [N]

    # A change invalidates the view: the next read sees it, and builds once again.
    account = sandbox.world.account(sandbox.account_id)
    last = ids[-1]
    sandbox.world.update_entity(account, ids[0], {"name": "Moved", "updated_at": 2_000_000_000})
    top = next(iter(client.iter_contact_pages(order={"updated_at": "desc"}, limit=5)))
    assert [c.id for c in top.contacts][:2] == [ids[0], last]
    assert top.contacts[0].name == "Moved"
    assert builds == [N, N]

    sandbox.world.set_deleted(account, ids[1], True)
    page = next(iter(client.iter_contact_pages(limit=2)))
    assert [c.id for c in page.contacts] == [ids[0], ids[2]]
    assert [c.id for c in client.iter_contacts(only_deleted=True)] == [ids[1]]
    assert builds == [N, N, N, N]
