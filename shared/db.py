"""MySQL access on pymysql: one connection per thread, parameterized SQL, explicit transactions."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import pymysql
import pymysql.cursors
from pymysql.connections import Connection

from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

Row = dict[str, Any]
Params = Sequence[Any] | dict[str, Any] | None

# Error codes that mean "the connection is gone", not "your SQL is wrong": server restarted (2006),
# lost mid-query (2013), cannot connect (2003), server shutting down (1053).
_CONNECTION_LOST = {2003, 2006, 2013, 1053, 4031}

# Error codes that mean "another transaction got in the way; the same work may simply run again":
# InnoDB chose this transaction as a deadlock victim (1213, already rolled back by the server) or a
# row lock was not granted in time (1205). Only whole transactions are retried, never a statement.
_TRANSIENT_CONFLICT = {1213, 1205}

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """MySQL cannot be reached; callers answer 503 or retry later."""


class Database:
    """MySQL with per-thread connections that reconnect after a server restart."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        connect_timeout: float = 5.0,
    ) -> None:
        self._params: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": database,
            "connect_timeout": connect_timeout,
            "read_timeout": 60,
            "write_timeout": 60,
            "charset": "utf8mb4",
            "autocommit": True,
            # Timestamps are written by the server (CURRENT_TIMESTAMP) and compared with Python's
            # UTC; the session time zone makes both the same clock whatever the server's setting.
            "init_command": "SET time_zone = '+00:00'",
            "cursorclass": pymysql.cursors.DictCursor,
        }
        self.name = database
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            host=settings.mysql_host,
            port=settings.mysql_port,
            user=settings.mysql_user,
            password=settings.mysql_password.get_secret_value(),
            database=settings.mysql_database,
            connect_timeout=settings.mysql_connect_timeout,
        )

    def _connect(self) -> Connection[Any]:
        try:
            return pymysql.connect(**self._params)
        except pymysql.err.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to MySQL: {exc.args[0]}") from exc

    def _connection(self) -> Connection[Any]:
        conn: Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or not conn.open:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn: Connection[Any] | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            # It is already broken; closing only frees the socket.
            with contextlib.suppress(Exception):
                conn.close()

    @contextmanager
    def transaction(self) -> Iterator[pymysql.cursors.DictCursor]:
        """A cursor inside BEGIN … COMMIT; rolled back on any exception."""
        conn = self._begin()
        cursor = conn.cursor()
        try:
            yield cursor
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except pymysql.err.Error:
                self._drop_connection()
            raise
        finally:
            cursor.close()

    def run_transaction(
        self,
        work: Callable[[pymysql.cursors.DictCursor], T],
        *,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """Run `work(cursor)` in one transaction, again from the start if InnoDB aborts it.

        A deadlock (1213) or lock-wait timeout (1205) is not an error in the caller's logic: the
        server rolled the transaction back and the same work succeeds once the other transaction
        is through. `work` must therefore only touch the database (no side effects outside it).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as cursor:
                    return work(cursor)
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in _TRANSIENT_CONFLICT or attempt == attempts:
                    raise
                # Jittered, growing pause so the two victims of one deadlock do not collide again.
                pause = random.uniform(0.005, 0.02) * attempt
                log.info(
                    "transaction aborted by mysql (%s), retrying",
                    exc.args[0],
                    extra={"attempt": attempt, "pause_s": round(pause, 3)},
                )
                sleep(pause)
        raise AssertionError("unreachable")

    def _begin(self) -> Connection[Any]:
        # BEGIN is the first statement to meet a dead connection after a server restart; nothing
        # has run yet, so reconnecting and starting over is safe.
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.ping(reconnect=False)
                conn.begin()
                return conn
            except pymysql.err.OperationalError as exc:
                self._drop_connection()
                if attempt == 2 or exc.args[0] not in _CONNECTION_LOST:
                    raise DatabaseUnavailable(f"MySQL unavailable: {exc.args[0]}") from exc
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def _run(self, sql: str, params: Params, fetch: str) -> Any:
        # Single statements run in autocommit mode, so one retry after a lost connection is safe
        # for reads; writes here are idempotent upserts by design.
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.cursor() as cursor:
                    affected = cursor.execute(sql, params)
                    if fetch == "one":
                        return cursor.fetchone()
                    if fetch == "all":
                        return cursor.fetchall()
                    if fetch == "lastrowid":
                        return cursor.lastrowid
                    return affected
            except pymysql.err.OperationalError as exc:
                self._drop_connection()
                if attempt == 2 or exc.args[0] not in _CONNECTION_LOST:
                    raise DatabaseUnavailable(f"MySQL unavailable: {exc.args[0]}") from exc
            except pymysql.err.InterfaceError as exc:
                self._drop_connection()
                if attempt == 2:
                    raise DatabaseUnavailable("MySQL connection broken") from exc
        raise AssertionError("unreachable")

    def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        result: Row | None = self._run(sql, params, "one")
        return result

    def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        return list(self._run(sql, params, "all"))

    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement in autocommit mode; returns the affected row count."""
        result: int = self._run(sql, params, "count")
        return result

    def insert(self, sql: str, params: Params = None) -> int:
        """Run one INSERT in autocommit mode; returns the new row's id."""
        result: int = self._run(sql, params, "lastrowid")
        return result

    def ping(self) -> None:
        self.fetch_one("SELECT 1 AS ok")

    def _lock_query(self, sql: str, params: Params) -> Row | None:
        # Not through _run: a silent reconnect there would hide that a held lock died with the
        # old connection. Here a lost connection is simply "unavailable".
        try:
            with self._connection().cursor() as cursor:
                cursor.execute(sql, params)
                row: Row | None = cursor.fetchone()
                return row
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            self._drop_connection()
            raise DatabaseUnavailable(f"MySQL unavailable: {exc.args[0]}") from exc

    def close(self) -> None:
        self._drop_connection()

    @contextmanager
    def named_lock(self, name: str, *, timeout: float = 0) -> Iterator[bool]:
        """MySQL GET_LOCK held on this thread's connection; yields whether it was acquired."""
        row = self._lock_query("SELECT GET_LOCK(%s, %s) AS got", (name, timeout))
        acquired = bool(row and row["got"] == 1)
        conn = self._connection()
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT RELEASE_LOCK(%s)", (name,))
                except pymysql.err.Error:
                    # The connection died: the server released the lock with it.
                    self._drop_connection()


@lru_cache(maxsize=1)
def get_database() -> Database:
    """The process-wide database handle built from settings."""
    return Database.from_settings(get_settings())
