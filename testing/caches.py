"""Settings-derived singletons, forgotten between tests (and benchmark phases)."""

from __future__ import annotations


def reset_caches() -> None:
    """Forget every cached settings-derived object so the next call reads the environment."""
    from shared.crypto import get_secret_box
    from shared.db import get_database
    from shared.jobqueue import get_queue
    from shared.settings import get_settings

    for cached in (get_settings, get_database, get_queue, get_secret_box):
        cached.cache_clear()
