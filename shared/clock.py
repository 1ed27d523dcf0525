"""UTC time the way the database stores it and the API shows it.

MySQL DATETIME columns carry no zone: every one of ours holds UTC, and each session runs with
`time_zone = '+00:00'` (see `shared.db`), so `NOW()` / `UTC_TIMESTAMP()` and the naive values
written from here are the same clock.
"""

from __future__ import annotations

from datetime import UTC, datetime


def aware_utcnow() -> datetime:
    """Now as an aware UTC datetime, for arithmetic with token expiries and JWT times."""
    return datetime.now(UTC)


def utcnow() -> datetime:
    """Now as a naive UTC datetime, for DATETIME columns."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime) -> datetime:
    """`value` as a naive UTC datetime for a DATETIME column; a naive value is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None)


def aware_utc(value: datetime) -> datetime:
    """`value` as an aware UTC datetime; a naive value (what MySQL DATETIME returns) is UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso_utc(value: object) -> str | None:
    """A stored time as ISO 8601 with its offset (`2024-05-01T12:00:00+00:00`); None if not a time.

    Naive values are read as UTC (what MySQL DATETIME returns); aware ones are converted.
    """
    if not isinstance(value, datetime):
        return None
    return aware_utc(value).isoformat()
