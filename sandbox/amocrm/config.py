"""Sandbox configuration, from the environment or keyword arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass
class SandboxConfig:
    """Everything the amoCRM emulator can be told at start-up (most is changeable at runtime)."""

    client_id: str = "00000000-0000-4000-8000-00000000a0c1"
    client_secret: str = "sandbox-client-secret"
    redirect_uri: str = "http://127.0.0.1:8080/auth"
    disable_hook_url: str | None = None
    token_ttl: int = 86400
    # Per account per 1 s sliding window; amoCRM's documented integration limit. 0 disables.
    rate_limit: int = 7
    latency_ms: int = 0
    # Every Nth contact (by id) is rendered with the pre-2020 `"enum": "WORK"` key instead of
    # `enum_code`, so clients are exercised on both shapes. 0 = never.
    legacy_enum_every: int = 0
    # Accounts created at start-up so a newcomer's first run has something to approve.
    seed_accounts: int = 1
    webhook_timeout: float = 2.0  # amoCRM counts a hook as failed after 2 s

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> SandboxConfig:
        """Read AMOCRM_CLIENT_ID/SECRET/REDIRECT_URI and SANDBOX_AMOCRM_* variables."""
        env = os.environ if environ is None else environ
        names = {
            "client_id": "AMOCRM_CLIENT_ID",
            "client_secret": "AMOCRM_CLIENT_SECRET",
            "redirect_uri": "AMOCRM_REDIRECT_URI",
            "disable_hook_url": "SANDBOX_AMOCRM_DISABLE_HOOK_URL",
            "token_ttl": "SANDBOX_AMOCRM_TOKEN_TTL",
            "rate_limit": "SANDBOX_AMOCRM_RATE_LIMIT",
            "latency_ms": "SANDBOX_AMOCRM_LATENCY_MS",
            "legacy_enum_every": "SANDBOX_AMOCRM_LEGACY_ENUM_EVERY",
            "seed_accounts": "SANDBOX_AMOCRM_SEED_ACCOUNTS",
            "webhook_timeout": "SANDBOX_AMOCRM_WEBHOOK_TIMEOUT",
        }
        kwargs: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for attr, var in names.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            kind = types[attr]
            if kind == "int":
                kwargs[attr] = int(raw)
            elif kind == "float":
                kwargs[attr] = float(raw)
            else:
                kwargs[attr] = raw
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)  # type: ignore[arg-type]
