"""One Unisender list, one account: bindings of list ids per Unisender key (issue 18).

`unisender_list_bindings` holds one row per (key fingerprint, list id), so two accounts can
never be bound to the same list; `unisender_settings.key_fingerprint` says which key a link
uses. Existing links are bound in connection order; an account that shares a list with an
earlier one stays unbound and is reported (`amosync status`, the status page) until an operator
splits it (`amosync lists split <name>`). See shared/list_binding.py.
"""

from typing import Any

from yoyo import step

from shared.list_binding import backfill_bindings

__depends__ = {"0011_amo_holds"}


def _bind_existing_links(conn: Any) -> None:
    backfill_bindings(conn.cursor())


def _nothing(conn: Any) -> None:
    """Rolling back the backfill is dropping the table (the step before)."""


steps = [
    step(
        "CREATE TABLE unisender_list_bindings ("
        " key_fingerprint CHAR(64) NOT NULL,"
        " list_id BIGINT NOT NULL,"
        " account_id BIGINT NOT NULL,"
        " bound_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
        " PRIMARY KEY (key_fingerprint, list_id),"
        " KEY ix_list_bindings_account (account_id, key_fingerprint),"
        " CONSTRAINT fk_list_bindings_account FOREIGN KEY (account_id)"
        " REFERENCES accounts (id) ON DELETE CASCADE"
        ") ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin",
        "DROP TABLE unisender_list_bindings",
    ),
    step(
        "ALTER TABLE unisender_settings ADD COLUMN key_fingerprint CHAR(64) "
        "CHARACTER SET ascii COLLATE ascii_bin NULL AFTER api_key_enc",
        "ALTER TABLE unisender_settings DROP COLUMN key_fingerprint",
    ),
    step(_bind_existing_links, _nothing),
]
