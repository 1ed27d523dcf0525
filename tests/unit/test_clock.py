"""shared.clock: the UTC helpers every DATETIME column and API time goes through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.clock import iso_utc, naive_utc, utcnow

pytestmark = pytest.mark.unit


def test_utcnow_is_naive_utc() -> None:
    now = utcnow()
    assert now.tzinfo is None
    assert abs(now.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(seconds=5)


def test_naive_utc_converts_aware_values_and_keeps_naive_ones() -> None:
    moscow = timezone(timedelta(hours=3))
    assert naive_utc(datetime(2024, 5, 1, 15, 0, tzinfo=moscow)) == datetime(2024, 5, 1, 12, 0)
    assert naive_utc(datetime(2024, 5, 1, 12, 0)) == datetime(2024, 5, 1, 12, 0)


def test_iso_utc_reads_naive_values_as_utc() -> None:
    assert iso_utc(datetime(2024, 5, 1, 12, 0, 1)) == "2024-05-01T12:00:01+00:00"
    moscow = timezone(timedelta(hours=3))
    assert iso_utc(datetime(2024, 5, 1, 15, 0, tzinfo=moscow)) == "2024-05-01T12:00:00+00:00"
    assert iso_utc(None) is None
    assert iso_utc("2024-05-01") is None
