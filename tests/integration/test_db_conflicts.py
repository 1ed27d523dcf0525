"""A transaction that InnoDB aborts (deadlock victim) runs again instead of failing the caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pymysql
import pytest

from shared.db import Database

pytestmark = pytest.mark.integration


def _second_database(db: Database) -> Database:
    """Another Database object on the same schema: its own connections, as another process has."""
    params = db._params  # the same connection settings, as another process has them
    return Database(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        database=params["database"],
    )


@pytest.fixture
def pair_table(db: Database) -> Iterator[None]:
    """Two rows in a table of the test session's own database (dropped after the test)."""
    db.execute("CREATE TABLE deadlock_pair (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB")
    db.execute("INSERT INTO deadlock_pair (id, n) VALUES (1, 0), (2, 0)")
    yield
    db.execute("DROP TABLE deadlock_pair")


def _deadlock(db: Database, *, attempts: int) -> tuple[list[object], int]:
    """Two transactions lock rows 1 and 2 in opposite order, so InnoDB must abort one of them.

    Each side locks its first row, waits until the other side holds its own first row, then asks
    for the other's row: a real, deterministic deadlock. Returns each side's outcome and row sums.
    """
    both_hold_first = threading.Barrier(2, timeout=10)
    outcomes: list[object] = [None, None]

    def side(index: int, database: Database, first: int, second: int) -> None:
        calls = 0

        def work(cur: pymysql.cursors.DictCursor) -> int:
            nonlocal calls
            calls += 1
            cur.execute("SELECT n FROM deadlock_pair WHERE id = %s FOR UPDATE", (first,))
            if calls == 1:
                both_hold_first.wait()
            cur.execute("UPDATE deadlock_pair SET n = n + 1 WHERE id = %s", (second,))
            cur.execute("UPDATE deadlock_pair SET n = n + 1 WHERE id = %s", (first,))
            return calls

        try:
            outcomes[index] = database.run_transaction(work, attempts=attempts)
        except pymysql.err.OperationalError as exc:
            outcomes[index] = exc.args[0]

    other = _second_database(db)
    threads = [
        threading.Thread(target=side, args=(0, db, 1, 2)),
        threading.Thread(target=side, args=(1, other, 2, 1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    other.close()
    row = db.fetch_one("SELECT SUM(n) AS total FROM deadlock_pair")
    assert row is not None
    return outcomes, int(row["total"])


def test_deadlock_victim_runs_again_and_both_commit(db: Database, pair_table: None) -> None:
    outcomes, total = _deadlock(db, attempts=4)
    # One side committed at its first try, the victim at its second; both increments landed.
    assert sorted(outcomes) == [1, 2]  # type: ignore[type-var]
    assert total == 4


def test_without_retries_the_victim_sees_the_deadlock(db: Database, pair_table: None) -> None:
    outcomes, total = _deadlock(db, attempts=1)
    assert 1213 in outcomes
    assert total == 2  # only the survivor's two increments
