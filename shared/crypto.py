"""Encryption of secrets at rest (tokens, API keys, webhook secrets) with Fernet."""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.settings import get_settings


class DecryptionFailed(Exception):
    """A stored secret cannot be decrypted with any configured key."""


class SecretBox:
    """Encrypts with the first key of ENCRYPTION_KEY and decrypts with any, so keys can rotate."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ValueError("ENCRYPTION_KEY is empty: generate one with `amosync gen-key`")
        self._fernet = MultiFernet([Fernet(_as_fernet_key(k)) for k in parts])

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken as exc:
            raise DecryptionFailed("stored secret does not decrypt with ENCRYPTION_KEY") from exc

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a stored value under the newest key."""
        return self._fernet.rotate(bytes(token))


def _as_fernet_key(key: str) -> bytes:
    # Accept a proper Fernet key; otherwise derive one, so a long random passphrase also works.
    try:
        if len(base64.urlsafe_b64decode(key.encode())) == 32:
            return key.encode()
    except (ValueError, TypeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())


def generate_key() -> str:
    return Fernet.generate_key().decode()


def new_secret(nbytes: int = 24) -> str:
    """A URL-safe random secret (webhook URLs, OAuth state)."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@lru_cache(maxsize=1)
def get_secret_box() -> SecretBox:
    return SecretBox(get_settings().encryption_key.get_secret_value())
