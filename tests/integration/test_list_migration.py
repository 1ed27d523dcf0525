"""Migration 0012 finds lists that two accounts share; status and the CLI report and split them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from typer.testing import CliRunner
from yoyo import get_backend, read_migrations

from cli.main import app
from shared.crypto import get_secret_box
from shared.db import get_database
from shared.list_binding import key_fingerprint, shared_lists
from shared.migrate import MIGRATIONS_DIR, _backend_uri, apply_migrations, ensure_database
from shared.settings import get_settings
from shared.status import collect_status, render_status_page
from shared.unisender_link import get_unisender_link
from tests.conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, reset_caches
from tests.integration.test_fullsync import Connected, Sandboxes, env, run_sync, servers  # noqa: F401
from tests.integration.test_list_per_account import (  # noqa: F401
    _connect,
    _install,
    _new_key,
    amocrm_without_ip_ban,
)

pytestmark = pytest.mark.integration

BINDINGS = "0012_list_bindings"


@pytest.fixture
def old_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own, migrated up to just before the bindings."""
    name = f"amosync_test_mig_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MYSQL_DATABASE", name)
    reset_caches()
    settings = get_settings()
    ensure_database(settings)
    backend = get_backend(_backend_uri(settings))
    earlier = read_migrations(str(MIGRATIONS_DIR)).filter(lambda m: m.id < BINDINGS)
    with backend.lock():
        backend.apply_migrations(backend.to_apply(earlier))
    yield name
    reset_caches()
    conn = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def _old_link(account_id: int, name: str, *, key: str, list_id: int, minute: int) -> None:
    db = get_database()
    db.execute(
        "INSERT INTO accounts (id, name, host) VALUES (%s, %s, %s)",
        (account_id, name, f"{name}.amocrm.ru"),
    )
    db.execute(
        "INSERT INTO unisender_settings (account_id, api_key_enc, list_id, list_title, "
        "connected_at) VALUES (%s, %s, %s, 'amoCRM Shop', %s)",
        (account_id, get_secret_box().encrypt(key), list_id, f"2025-01-01 10:{minute:02d}:00"),
    )


def test_the_migration_binds_first_connected_and_reports_the_rest(old_database: str) -> None:
    _old_link(11, "later", key="key-one", list_id=500, minute=30)
    _old_link(12, "first", key="key-one", list_id=500, minute=10)
    _old_link(13, "alone", key="key-one", list_id=501, minute=20)
    _old_link(14, "other-key", key="key-two", list_id=500, minute=40)

    applied = apply_migrations(get_settings())
    assert applied[0] == BINDINGS and all(m > BINDINGS for m in applied[1:]), applied

    db = get_database()
    bindings = db.fetch_all(
        "SELECT key_fingerprint, list_id, account_id FROM unisender_list_bindings "
        "ORDER BY account_id"
    )
    assert [(b["account_id"], b["list_id"]) for b in bindings] == [(12, 500), (13, 501), (14, 500)]
    assert bindings[0]["key_fingerprint"] == key_fingerprint("key-one")
    assert "key-one" not in json.dumps(bindings, default=str)
    reported = [(s.account_id, s.list_id, s.holder_id, s.holder_name) for s in shared_lists(db)]
    assert reported == [(11, 500, 12, "first")]
    page = render_status_page(collect_status(db))
    assert "amosync lists split later" in page and "Shared Unisender lists" in page


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_status_and_the_cli_report_a_shared_list_and_split_it(
    env: Sandboxes,  # noqa: F811
) -> None:
    db = get_database()
    key = _new_key(env)
    holder = _install(env, "Cli Shop", ("h@example.com",))
    held = _connect(holder, key)["list_id"]
    other = _install(env, "Cli Shop", ("o@example.com",))
    db.execute(
        "INSERT INTO unisender_settings (account_id, api_key_enc, key_fingerprint, list_id, "
        "list_title) VALUES (%s, %s, %s, %s, 'shared')",
        (other.id, get_secret_box().encrypt(key), key_fingerprint(key), held),
    )

    shared = _cli("lists", "shared", "--json")
    assert shared.exit_code == 1, shared.output
    rows = json.loads(shared.stdout)
    assert any(r["account_id"] == other.id and r["bound_to_account_id"] == holder.id for r in rows)
    status = _cli("status", "--json")
    assert status.exit_code == 0, status.output
    assert any(r["account_id"] == other.id for r in json.loads(status.stdout)["shared_lists"])
    assert key not in shared.output + status.output

    assert _cli("lists", "split", holder.name).exit_code == 1  # the holder keeps its list
    split = _cli("lists", "split", other.name)
    assert split.exit_code == 0, split.output
    link = get_unisender_link(db, other.id)
    assert link is not None and link.list_id not in (None, held)
    assert all(s.account_id != other.id for s in shared_lists(db))
    assert _cli("lists", "shared").exit_code == 0
    run_sync(other.id)
    mine = Connected(other.id, key, int(link.list_id or 0), None)  # type: ignore[arg-type]
    assert mine.list_emails() == {"o@example.com"}
