"""Versioned schema migrations (yoyo) applied by one command: `amosync migrate`."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pymysql
from yoyo import get_backend, read_migrations

from shared.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _backend_uri(settings: Settings) -> str:
    password = quote(settings.mysql_password.get_secret_value(), safe="")
    user = quote(settings.mysql_user, safe="")
    return (
        f"mysql://{user}:{password}@{settings.mysql_host}:{settings.mysql_port}"
        f"/{settings.mysql_database}"
    )


def ensure_database(settings: Settings) -> None:
    """Create the configured database if the server does not have it yet."""
    conn = pymysql.connect(
        host=settings.mysql_host,
        port=settings.mysql_port,
        user=settings.mysql_user,
        password=settings.mysql_password.get_secret_value(),
        connect_timeout=settings.mysql_connect_timeout,
    )
    try:
        with conn.cursor() as cursor:
            # Identifiers cannot be parameters; the name is validated to a safe alphabet first.
            name = settings.mysql_database
            if not name.replace("_", "").isalnum():
                raise ValueError(f"refusing unusual database name {name!r}")
            cursor.execute(
                f"CREATE DATABASE IF NOT EXISTS `{name}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
    finally:
        conn.close()


def pending_migrations(settings: Settings) -> list[str]:
    """Ids of the migrations not applied yet; reads only (a missing database is MySQL's error)."""
    backend = get_backend(_backend_uri(settings))
    return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]


def apply_migrations(settings: Settings) -> list[str]:
    """Apply every pending migration; returns the ids applied now."""
    ensure_database(settings)
    backend = get_backend(_backend_uri(settings))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    # Decide what is pending under the lock, so two `migrate` runs never apply the same step.
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [m.id for m in pending]
    log.info("migrations applied", extra={"applied": applied, "database": settings.mysql_database})
    return applied
