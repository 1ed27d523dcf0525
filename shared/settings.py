"""Typed configuration read from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values shipped in `.env.example`; running with them outside sandbox mode would mean running
# with secrets everybody knows.
PLACEHOLDER_PREFIX = "change-me"

# Secrets amosync cannot run without outside sandbox mode (MYSQL_PASSWORD may be empty: a local
# MySQL user without a password is a legitimate choice).
REQUIRED_SECRETS = ("amocrm_client_id", "amocrm_client_secret", "encryption_key", "admin_token")


def public_url_for(gateway_port: int | str) -> str:
    """PUBLIC_URL when it is not set: the gateway on this machine."""
    return f"http://localhost:{gateway_port}"


class Settings(BaseSettings):
    """Every knob of amosync, with the names operators set."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    sandbox_mode: bool = False

    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_user: str = "root"
    mysql_password: SecretStr = SecretStr("")
    mysql_database: str = "amosync"
    mysql_connect_timeout: float = 5.0

    beanstalk_host: str = "127.0.0.1"
    beanstalk_port: int = 11300
    # Prepended to every tube name: lets several deployments (or test runs) share one beanstalkd.
    beanstalk_tube_prefix: str = ""

    amocrm_client_id: str = ""
    amocrm_client_secret: SecretStr = SecretStr("")
    # Empty: derived, <PUBLIC_URL>/auth (so changing GATEWAY_PORT or PUBLIC_URL moves it too).
    amocrm_redirect_uri: str = ""
    amocrm_auth_url: str = "https://www.amocrm.ru/oauth"
    # When set, every account-API and token call goes here instead of https://{account host}.
    amocrm_api_url: str | None = None
    amocrm_allowed_domains: str = "amocrm.ru,amocrm.com,kommo.com"
    amocrm_rate_limit_rps: float = 7.0
    # amoCRM's 7/s names no unit and repeated 429s end in a 403 for the whole IP, so by default
    # all accounts together get what one account may use. Raise it only if amoCRM confirms more.
    amocrm_ip_rate_limit_rps: float = Field(default=7.0, gt=0)
    # Bulk work (full syncs, reconciles) may use this share of the IP budget; the rest is kept for
    # interactive work (webhook events, widget calls) so a big sync never starves small accounts.
    amocrm_bulk_share: float = Field(default=0.7, gt=0, le=1)
    # Names the egress IP these processes send from: every process with the same value shares one
    # IP budget. A deployment with several egress IPs gives each group of workers its own value.
    egress_id: str = Field(
        default="default", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    # A 429 without `retry_after` pauses the egress this long: the conservative reading, since
    # repeated 429s are what earns a 403 ban.
    amocrm_rate_limit_pause_seconds: float = Field(default=30.0, gt=0)
    # A 403 stops every amoCRM request through the egress IP (or the account); one probe is sent
    # after this many seconds, the interval doubling after each refused probe up to the maximum.
    amocrm_block_probe_seconds: int = Field(default=60, ge=1)
    amocrm_block_probe_max_seconds: int = Field(default=3600, ge=1)
    # OAuth `state` lifetime: the consent page plus amoCRM's 20-minute code window.
    oauth_state_ttl_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # A refresh job finding a pair younger than this skips: it is a duplicate of a finished one.
    token_refresh_min_age_minutes: int = Field(default=5, ge=0)

    unisender_api_url: str = "https://api.unisender.com/en/api"
    # The account id makes the default title unique per amoCRM account: two accounts with the
    # same name on one Unisender key get two lists (a list is bound to one account by id anyway).
    unisender_list_title: str = "amoCRM {account_name} ({account_id})"

    # Empty: derived from GATEWAY_PORT, http://localhost:<GATEWAY_PORT>.
    public_url: str = ""
    encryption_key: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")
    # Wrong admin credentials allowed per client IP per window before it gets 429 (guessing).
    admin_auth_max_failures: int = Field(default=10, ge=1)
    admin_auth_window_seconds: int = Field(default=300, ge=1)
    gateway_port: int = 8080

    log_level: str = "INFO"

    # Queue consumer behaviour.
    # Unexpected errors are retried this many times; known-transient ones (vendor or infra down)
    # for JOB_RETRY_BUDGET_SECONDS, so an outage of hours needs no operator.
    job_max_attempts: int = Field(default=8, ge=1)
    job_retry_budget_seconds: int = Field(default=6 * 3600, ge=1)
    job_backoff_base_seconds: float = Field(default=2.0, gt=0)
    job_backoff_max_seconds: float = Field(default=600.0, gt=0)
    job_ttr_seconds: int = Field(default=120, ge=5)
    # Full sync jobs: the consumer touches the job after every page and import, so the TTR only
    # has to outlast one Unisender import with its retries.
    full_sync_ttr_seconds: int = Field(default=180, ge=5)
    # An active run whose row has not moved this long is declared abandoned by the next request.
    sync_run_stale_minutes: int = Field(default=60, ge=1)

    # Scheduler.
    token_refresh_interval_minutes: int = Field(default=60, ge=1)
    token_refresh_horizon_hours: int = Field(default=24, ge=1)
    # Reconciles (see shared/planner.py): accounts whose webhooks look lost are polled every
    # RECONCILE_INTERVAL_MINUTES, accounts with healthy webhooks every
    # RECONCILE_HEALTHY_INTERVAL_MINUTES; each account is fully re-read every
    # FULL_RECONCILE_EVERY_HOURS at its own time of day. All of it together is planned within
    # RECONCILE_BUDGET_SHARE of the egress IP's amoCRM budget; beyond that every interval stretches.
    reconcile_interval_minutes: int = Field(default=15, ge=1)
    reconcile_healthy_interval_minutes: int = Field(default=360, ge=1)
    full_reconcile_every_hours: int = Field(default=24, ge=1)
    reconcile_budget_share: float = Field(default=0.5, gt=0, le=1)
    # Only the holder of this MySQL lease schedules; a standby takes over this long after the
    # holder stopped renewing (it renews every third of it).
    scheduler_lease_seconds: int = Field(default=30, ge=3, le=3600)

    # Prometheus /metrics of a consumer or the scheduler on this port; 0: off (several local
    # processes would fight over one port). The Kubernetes manifests set 9100 per pod.
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("amocrm_api_url")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @model_validator(mode="before")
    @classmethod
    def _derive_urls(cls, data: Any) -> Any:
        """PUBLIC_URL and AMOCRM_REDIRECT_URI follow GATEWAY_PORT unless set: they never drift."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not str(data.get("public_url") or "").strip():
            data["public_url"] = public_url_for(data.get("gateway_port") or 8080)
        if not str(data.get("amocrm_redirect_uri") or "").strip():
            data["amocrm_redirect_uri"] = str(data["public_url"]).rstrip("/") + "/auth"
        return data

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if self.sandbox_mode:
            return self
        missing = [name.upper() for name in REQUIRED_SECRETS if not self.secret_value(name)]
        if missing:
            raise ValueError(
                f"missing or empty: {', '.join(missing)}; set them in .env or the environment "
                "(or SANDBOX_MODE=true for a local sandbox run)"
            )
        for name in ("amocrm_client_secret", "encryption_key", "admin_token", "mysql_password"):
            value: SecretStr = getattr(self, name)
            if value.get_secret_value().startswith(PLACEHOLDER_PREFIX):
                raise ValueError(
                    f"{name.upper()} still holds the placeholder from .env.example; "
                    "set a real secret (or SANDBOX_MODE=true for a local sandbox run)"
                )
        return self

    def secret_value(self, name: str) -> str:
        """A setting's value as text, secret or not (for presence checks, never for printing)."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")

    @property
    def allowed_domains(self) -> tuple[str, ...]:
        return tuple(d.strip().lower() for d in self.amocrm_allowed_domains.split(",") if d.strip())

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (tests clear the cache after changing the env)."""
    return Settings()
