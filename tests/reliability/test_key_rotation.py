"""`amosync rotate-key`: every stored secret moves to the newest ENCRYPTION_KEY, values intact."""

from __future__ import annotations

import os
import random

import pytest
from typer.testing import CliRunner

from cli.main import app
from shared.crypto import DecryptionFailed, SecretBox, generate_key

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SECRETS = {
    "access": "access-token-value-1",
    "refresh": "refresh-token-value-1",
    "api_key": "unisender-api-key-1",
    "hook": "webhook-secret-1",
}


def _seed(db, box: SecretBox) -> int:  # type: ignore[no-untyped-def]
    account_id = random.randint(10**12, 10**13)
    db.execute(
        "INSERT INTO accounts (id, name, host, webhook_secret_enc) VALUES (%s, %s, %s, %s)",
        (account_id, f"rot{account_id}", "rot.amocrm.ru", box.encrypt(SECRETS["hook"])),
    )
    db.execute(
        "INSERT INTO oauth_tokens (account_id, access_token_enc, refresh_token_enc, expires_at) "
        "VALUES (%s, %s, %s, NOW())",
        (account_id, box.encrypt(SECRETS["access"]), box.encrypt(SECRETS["refresh"])),
    )
    db.execute(
        "INSERT INTO unisender_settings (account_id, api_key_enc) VALUES (%s, %s)",
        (account_id, box.encrypt(SECRETS["api_key"])),
    )
    return account_id


def _stored(db, account_id: int) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    tokens = db.fetch_one(
        "SELECT access_token_enc, refresh_token_enc FROM oauth_tokens WHERE account_id = %s",
        (account_id,),
    )
    link = db.fetch_one(
        "SELECT api_key_enc FROM unisender_settings WHERE account_id = %s", (account_id,)
    )
    hook = db.fetch_one("SELECT webhook_secret_enc FROM accounts WHERE id = %s", (account_id,))
    return {
        "access": bytes(tokens["access_token_enc"]),
        "refresh": bytes(tokens["refresh_token_enc"]),
        "api_key": bytes(link["api_key_enc"]),
        "hook": bytes(hook["webhook_secret_enc"]),
    }


def test_rotate_key_moves_every_secret_to_the_newest_key(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # The newest key is the session's own: the running stack shares this database, and its
    # other accounts must stay readable by it (rotation finds them already current).
    old, new = generate_key(), os.environ["ENCRYPTION_KEY"]
    account_id = _seed(db, SecretBox(old))
    runner = CliRunner()
    try:
        monkeypatch.setenv("ENCRYPTION_KEY", f"{new},{old}")
        from testing.caches import reset_caches

        reset_caches()
        check = runner.invoke(app, ["rotate-key", "--check"])
        assert check.exit_code == 1, check.output
        assert "still on an older key" in check.output

        result = runner.invoke(app, ["rotate-key"])
        assert result.exit_code == 0, result.output
        only_new = SecretBox(new)
        stored = _stored(db, account_id)
        for name, value in SECRETS.items():
            assert only_new.decrypt(stored[name]) == value
            with pytest.raises(DecryptionFailed):
                SecretBox(old).decrypt(stored[name])
        assert runner.invoke(app, ["rotate-key", "--check"]).exit_code == 0
        # Idempotent: a second run finds everything current and rewrites nothing.
        again = runner.invoke(app, ["rotate-key"])
        assert again.exit_code == 0 and " 0 re-encrypted" in again.output
        assert _stored(db, account_id) == stored
        for value in SECRETS.values():
            assert value not in result.output + check.output + again.output
    finally:
        db.execute("DELETE FROM accounts WHERE id = %s", (account_id,))


def test_rotate_key_reports_undecryptable_secrets_without_printing_them(
    db, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    lost = generate_key()
    account_id = _seed(db, SecretBox(lost))
    try:
        monkeypatch.setenv("ENCRYPTION_KEY", os.environ["ENCRYPTION_KEY"])
        from testing.caches import reset_caches

        reset_caches()
        result = CliRunner().invoke(app, ["rotate-key"])
        assert result.exit_code == 1
        assert f"id={account_id})" in result.output.replace("\n", "")
        for value in SECRETS.values():
            assert value not in result.output
        # Nothing was overwritten: the old key can still read them when it is found again.
        stored = _stored(db, account_id)
        assert SecretBox(lost).decrypt(stored["access"]) == SECRETS["access"]
    finally:
        db.execute("DELETE FROM accounts WHERE id = %s", (account_id,))
