"""`amosync migrate --check`: what the Kubernetes init containers wait on before the code starts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.db import Database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AMOSYNC = str(Path(sys.executable).parent / "amosync")


def run(*args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if database:
        env["MYSQL_DATABASE"] = database
    return subprocess.run(
        [AMOSYNC, "migrate", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def fresh_database(db: Database) -> Iterator[str]:
    name = f"amosync_test_{uuid.uuid4().hex[:10]}"
    yield name
    db.execute(f"DROP DATABASE IF EXISTS `{name}`")


def schema_exists(db: Database, name: str) -> bool:
    row = db.fetch_one(
        "SELECT 1 AS x FROM information_schema.schemata WHERE schema_name = %s", (name,)
    )
    return row is not None


def test_check_passes_on_a_migrated_database(db: Database) -> None:
    result = run("--check")
    assert result.returncode == 0, result.stderr
    assert "schema up to date" in result.stdout


def test_check_fails_until_the_migrate_job_ran_and_changes_nothing(
    db: Database, fresh_database: str
) -> None:
    result = run("--check", database=fresh_database)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # Waiting must not do the Job's work (not even create the database).
    assert not schema_exists(db, fresh_database)
    assert run(database=fresh_database).returncode == 0
    result = run("--check", database=fresh_database)
    assert result.returncode == 0, result.stderr
