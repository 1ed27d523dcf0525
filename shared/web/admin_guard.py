"""Failed admin credentials, counted per client IP in MySQL: guessing ADMIN_TOKEN gets 429.

Fixed windows of ADMIN_AUTH_WINDOW_SECONDS: after ADMIN_AUTH_MAX_FAILURES wrong credentials
from one IP, every request from it that presents credentials is refused with 429 and a
`Retry-After` until the window ends — the right token too, or the guesser would still learn
when it hit. Requests without credentials (the widget's JWT, amoCRM's calls) are not affected.
"""

from __future__ import annotations

import math

import flask

from shared import errors
from shared.db import Database
from shared.settings import get_settings


class TooManyAttempts(errors.AppError):
    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed admin credentials from this address; retry in {retry_after} s"
        )
        self.headers = {"Retry-After": str(retry_after)}


def client_ip(request: flask.Request) -> str:
    """The caller's IP as the gateway saw it.

    nginx appends the address it accepted the connection from to X-Forwarded-For, so the last
    entry is the one a client cannot forge (the functions are reachable only through nginx).
    Behind another proxy, give nginx `set_real_ip_from` so that address is the client's.
    """
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return (last or request.remote_addr or "unknown")[:64]


def refuse_if_locked(db: Database, ip: str) -> None:
    """Raise TooManyAttempts while `ip` is over the limit in its current window."""
    settings = get_settings()
    row = db.fetch_one(
        "SELECT failures, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), "
        "window_started_at + INTERVAL %s SECOND) AS remaining_us "
        "FROM admin_auth_failures WHERE client_ip = %s",
        (settings.admin_auth_window_seconds, ip),
    )
    if row is None or int(row["remaining_us"]) <= 0:
        return
    if int(row["failures"]) >= settings.admin_auth_max_failures:
        raise TooManyAttempts(max(1, math.ceil(int(row["remaining_us"]) / 1_000_000)))


def record_failure(db: Database, ip: str) -> None:
    """Count one wrong credential for `ip`; an expired window starts over (one atomic upsert)."""
    window = get_settings().admin_auth_window_seconds
    # Forget windows long over, so the table holds only recent guessers.
    db.execute(
        "DELETE FROM admin_auth_failures "
        "WHERE window_started_at < UTC_TIMESTAMP(6) - INTERVAL %s SECOND LIMIT 100",
        (window * 2,),
    )
    # MySQL assigns left to right: `failures` still sees the old window_started_at.
    db.execute(
        "INSERT INTO admin_auth_failures (client_ip, window_started_at, failures) "
        "VALUES (%s, UTC_TIMESTAMP(6), 1) ON DUPLICATE KEY UPDATE "
        "failures = IF(window_started_at <= UTC_TIMESTAMP(6) - INTERVAL %s SECOND, 1, "
        "failures + 1), "
        "window_started_at = IF(window_started_at <= UTC_TIMESTAMP(6) - INTERVAL %s SECOND, "
        "UTC_TIMESTAMP(6), window_started_at)",
        (ip, window, window),
    )
