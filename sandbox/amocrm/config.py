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
    # Per account per 1 s sliding window; amoCRM's documented 7 rps (no unit named: we count it
    # per account of our one integration). 0 disables.
    rate_limit: int = 7
    # Per account across ALL integrations (50/s since June 2021, [2nd]). The sandbox knows one
    # integration, so this bites only when `rate_limit` is raised above it or off. 0 disables.
    account_total_rate_limit: int = 50
    # Per client IP across all accounts, 1 s sliding window. The docs name no unit for the 7/s and
    # Kommo blocks "your IP address", so the safe reading is 7 for the whole IP. 0 disables.
    ip_rate_limit: int = 7
    # Escalation: this many rate-limit 429s answered to one IP within `ban_window` seconds turn
    # into a 403 ban of that IP for `ban_seconds` (every /api/v4 and /oauth2 request). The real
    # thresholds and duration are undocumented [unverified]; users report the block was lifted
    # only through support, so the default ban is long (an hour) and a control route lifts it.
    # ban_after_429s 0 = never ban; ban_seconds 0 = until lifted through /_sandbox/bans.
    ban_after_429s: int = 10
    ban_window: float = 60.0
    ban_seconds: float = 3600.0
    # "json": amoCRM's problem+json 403; "html": the nginx "403 Forbidden" page users report.
    ban_body: str = "json"
    latency_ms: int = 0
    # Every Nth contact (by id) is rendered with the pre-2020 `"enum": "WORK"` key instead of
    # `enum_code`, so clients are exercised on both shapes. 0 = never.
    legacy_enum_every: int = 0
    # Accounts created at start-up so a newcomer's first run has something to approve.
    seed_accounts: int = 1
    webhook_timeout: float = 2.0  # amoCRM counts a hook as failed after 2 s
    # A hook is disabled after MORE than this many invalid responses within
    # `webhook_disable_window` seconds when the latest delivery is invalid too ([2nd]: "more than
    # 100 invalid responses in the last 2 hours"). 0 = never disable.
    webhook_disable_after: int = 100
    webhook_disable_window: float = 7200.0
    # Seconds before each redelivery of a failed webhook, comma-separated ([2nd]: +5 min, +15 min,
    # then +15 min and +1 h only after a 499/5xx). Empty = no redelivery. Tests use e.g. "0.2,0.4".
    webhook_retry_delays: str = "300,900,900,3600"

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
            "account_total_rate_limit": "SANDBOX_AMOCRM_ACCOUNT_TOTAL_RATE_LIMIT",
            "ip_rate_limit": "SANDBOX_AMOCRM_IP_RATE_LIMIT",
            "ban_after_429s": "SANDBOX_AMOCRM_BAN_AFTER_429S",
            "ban_window": "SANDBOX_AMOCRM_BAN_WINDOW",
            "ban_seconds": "SANDBOX_AMOCRM_BAN_SECONDS",
            "ban_body": "SANDBOX_AMOCRM_BAN_BODY",
            "webhook_disable_after": "SANDBOX_AMOCRM_WEBHOOK_DISABLE_AFTER",
            "webhook_disable_window": "SANDBOX_AMOCRM_WEBHOOK_DISABLE_WINDOW",
            "webhook_retry_delays": "SANDBOX_AMOCRM_WEBHOOK_RETRY_DELAYS",
        }
        kwargs: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for attr, var in names.items():
            raw = env.get(var)
            if raw is None or (raw == "" and attr != "webhook_retry_delays"):
                continue
            kind = types[attr]
            if kind == "int":
                kwargs[attr] = int(raw)
            elif kind == "float":
                kwargs[attr] = float(raw)
            else:
                kwargs[attr] = raw
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**kwargs)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse settings the emulator cannot act on (a typo must not silently change it)."""
        if self.ban_body not in ("json", "html"):
            raise ValueError(f"ban_body must be 'json' or 'html', not {self.ban_body!r}")
        self.retry_delays()

    def retry_delays(self) -> list[float]:
        """`webhook_retry_delays` parsed: the wait before the 2nd, 3rd, … delivery attempt."""
        try:
            return [float(p) for p in self.webhook_retry_delays.split(",") if p.strip()]
        except ValueError:
            raise ValueError(
                f"webhook_retry_delays must be comma-separated seconds, not "
                f"{self.webhook_retry_delays!r}"
            ) from None
