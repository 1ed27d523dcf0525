"""A lease in MySQL: one holder of a named role at a time, with expiry and renewal.

Unlike GET_LOCK, the lease is a row, not a property of one connection: it survives the holder's
reconnect to MySQL (a restart, a dropped socket) and ends only when the holder stops renewing
(a crash, a partition) or releases it. Expiry is judged by the server's clock alone; the holder
also stops trusting its lease locally once a full term passed without a successful renewal.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field

from shared.db import Database, DatabaseUnavailable
from shared.jobqueue import hostname

log = logging.getLogger(__name__)


def new_holder_id() -> str:
    """host:pid:random, so two processes never share an identity (pods share no pid space)."""
    return f"{hostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Lease:
    """One process's view of a named lease; call `renew()` every `seconds / 3`."""

    db: Database
    name: str
    seconds: int
    holder: str = field(default_factory=new_holder_id)
    generation: int = 0
    _valid_until: float = 0.0  # time.monotonic() until which we may act as the holder

    def renew(self) -> bool:
        """Take the lease if it is free or expired, extend it if ours; True while we hold it."""
        started = time.monotonic()
        try:
            # In ON DUPLICATE KEY UPDATE the assignments run left to right: `generation` and
            # `acquired_at` read the old holder, then `holder` is changed, then `expires_at` reads
            # the new one. A live lease of another holder is left as it is.
            self.db.execute(
                "INSERT INTO leases (name, holder, expires_at) "
                "VALUES (%(name)s, %(holder)s, NOW(6) + INTERVAL %(seconds)s SECOND) "
                "ON DUPLICATE KEY UPDATE "
                "generation = IF(expires_at < NOW(6) AND holder <> %(holder)s, "
                "  generation + 1, generation), "
                "acquired_at = IF(expires_at < NOW(6) AND holder <> %(holder)s, "
                "  NOW(6), acquired_at), "
                "holder = IF(expires_at < NOW(6), %(holder)s, holder), "
                "expires_at = IF(holder = %(holder)s, "
                "  NOW(6) + INTERVAL %(seconds)s SECOND, expires_at)",
                {"name": self.name, "holder": self.holder, "seconds": self.seconds},
            )
            row = self.db.fetch_one(
                "SELECT holder, generation FROM leases WHERE name = %s", (self.name,)
            )
        except DatabaseUnavailable:
            # Keep acting only while the last successful renewal still covers us.
            log.warning("lease renewal failed: MySQL unavailable", extra={"lease": self.name})
            return self.held()
        was_held = self.held()
        if row is not None and row["holder"] == self.holder:
            self._valid_until = started + self.seconds
            if not was_held or row["generation"] != self.generation:
                log.info(
                    "lease acquired",
                    extra={
                        "lease": self.name,
                        "holder": self.holder,
                        "generation": row["generation"],
                    },
                )
            self.generation = int(row["generation"])
            return True
        if was_held:
            log.warning("lease lost", extra={"lease": self.name, "holder": self.holder})
        self._valid_until = 0.0
        return False

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def release(self) -> None:
        """Let a standby take over at once (on shutdown) instead of after the expiry."""
        self._valid_until = 0.0
        try:
            self.db.execute(
                "UPDATE leases SET expires_at = NOW(6) - INTERVAL 1 SECOND "
                "WHERE name = %s AND holder = %s",
                (self.name, self.holder),
            )
        except DatabaseUnavailable:
            log.warning("could not release the lease; it expires", extra={"lease": self.name})

    def current_holder(self) -> str | None:
        row = self.db.fetch_one(
            "SELECT holder FROM leases WHERE name = %s AND expires_at >= NOW(6)", (self.name,)
        )
        return str(row["holder"]) if row else None
