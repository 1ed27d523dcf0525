"""Security commands: re-encrypting stored secrets under the newest ENCRYPTION_KEY."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

# Every column that holds a Fernet token, with the key that finds its row again. A new
# encrypted column must be listed here, or rotation leaves it on the old key (and dropping the
# old key would then make it unreadable; `rotate-key --check` reports such values).
ENCRYPTED_COLUMNS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("oauth_tokens", ("account_id",), ("access_token_enc", "refresh_token_enc")),
    ("unisender_settings", ("account_id",), ("api_key_enc",)),
    ("accounts", ("id",), ("webhook_secret_enc",)),
)


@dataclass
class RotationReport:
    """What one pass over the stored secrets found (counts per `table.column`)."""

    current: dict[str, int] = field(default_factory=dict)
    rotated: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)  # on an older key, left as they were
    changed_meanwhile: dict[str, int] = field(default_factory=dict)
    undecryptable: list[str] = field(default_factory=list)

    def add(self, counter: dict[str, int], name: str) -> None:
        counter[name] = counter.get(name, 0) + 1


def split_keys(raw: str) -> list[str]:
    return [k.strip() for k in raw.split(",") if k.strip()]


def rotate_secrets(db: Any, keys: str, *, check_only: bool = False) -> RotationReport:
    """Re-encrypt every stored secret not yet under the first key of `keys`.

    Each row is updated only if its ciphertext is still the one read (a token refresh racing
    with us has written a fresh value under the newest key already, and must not be undone).
    """
    from shared.crypto import DecryptionFailed, SecretBox

    newest = SecretBox(split_keys(keys)[0])
    every = SecretBox(keys)
    report = RotationReport()
    for table, pk, columns in ENCRYPTED_COLUMNS:
        for column in columns:
            name = f"{table}.{column}"
            rows = db.fetch_all(
                f"SELECT {', '.join(pk)}, {column} AS value FROM {table} "  # noqa: S608 - fixed names
                f"WHERE {column} IS NOT NULL"
            )
            for row in rows:
                value = bytes(row["value"])
                where = ", ".join(f"{c}={row[c]}" for c in pk)
                try:
                    newest.decrypt(value)
                    report.add(report.current, name)
                    continue
                except DecryptionFailed:
                    pass
                try:
                    rotated = every.rotate(value)
                except Exception:
                    report.undecryptable.append(f"{name} ({where})")
                    continue
                if check_only:
                    report.add(report.stale, name)
                    continue
                condition = " AND ".join(f"{c} = %s" for c in pk)
                changed = db.execute(
                    f"UPDATE {table} SET {column} = %s "  # noqa: S608 - fixed names
                    f"WHERE {condition} AND {column} = %s",
                    (rotated, *(row[c] for c in pk), value),
                )
                report.add(report.rotated if changed else report.changed_meanwhile, name)
    return report


def rotate_key(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing; exit 1 if any secret still needs an older key.",
        ),
    ] = False,
) -> None:
    """Re-encrypt stored tokens, API keys and webhook secrets under the newest ENCRYPTION_KEY.

    Rotation: set ENCRYPTION_KEY=<new>,<old> everywhere and restart, run this command, then
    `rotate-key --check`; when it passes, drop <old> and restart again.
    """
    from shared.db import get_database
    from shared.logs import configure_logging
    from shared.settings import get_settings

    settings = get_settings()
    configure_logging("rotate-key", settings.log_level)
    keys = settings.encryption_key.get_secret_value()
    if not split_keys(keys):
        err.print("[red]error:[/red] ENCRYPTION_KEY is empty")
        raise typer.Exit(2)
    report = rotate_secrets(get_database(), keys, check_only=check)
    names = sorted(
        {*report.current, *report.rotated, *report.stale, *report.changed_meanwhile}
        | {u.split(" ")[0] for u in report.undecryptable}
    )
    for name in names:
        console.print(
            f"{name}: {report.current.get(name, 0)} already on the newest key, "
            f"{report.rotated.get(name, 0)} re-encrypted, "
            f"{report.stale.get(name, 0)} still on an older key, "
            f"{report.changed_meanwhile.get(name, 0)} rewritten meanwhile by the service",
            highlight=False,
        )
    if not names:
        console.print("no stored secrets")
    for where in report.undecryptable:
        # Never the value: only where it is.
        err.print(f"[red]undecryptable with any configured key:[/red] {where}")
    if report.undecryptable or (check and report.stale):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("rotate-key")(rotate_key)
