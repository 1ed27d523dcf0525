"""The effective configuration as an operator checks it: every setting, where it came from, and
what does not fit together (`amosync config`). Secrets are never shown, only whether they are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from shared.settings import PLACEHOLDER_PREFIX, Settings

# Settings that derive from others when left empty (shared/settings.py: _derive_urls).
DERIVED = ("public_url", "amocrm_redirect_uri")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Entry:
    name: str
    value: str
    source: str  # environment | .env | derived | default


def _shown(value: object) -> str:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if not secret:
            return "(empty)"
        if secret.startswith(PLACEHOLDER_PREFIX):
            return "(placeholder)"
        return f"(set, {len(secret)} characters)"
    return "" if value is None else str(value)


def effective(
    settings: Settings, environ: Mapping[str, str], dotenv: Mapping[str, str]
) -> list[Entry]:
    """Every setting with its value (secrets masked) and where the value came from."""
    entries = []
    for field in type(settings).model_fields:
        name = field.upper()
        if environ.get(name, "") != "":
            source = "environment"
        elif dotenv.get(name, "") != "":
            source = ".env"
        elif field in DERIVED:
            source = "derived"
        else:
            source = "default"
        entries.append(Entry(name, _shown(getattr(settings, field)), source))
    return entries


def warnings(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """What does not fit together; each line says what to change. `environ` is the environment
    `amosync dev` hands its processes (.env overlaid by the real environment)."""
    found: list[str] = []
    public = urlsplit(settings.public_url)
    public_base = settings.public_url.rstrip("/")
    if public.hostname in _LOCAL_HOSTS:
        port = public.port or (443 if public.scheme == "https" else 80)
        if port != settings.gateway_port:
            found.append(
                f"PUBLIC_URL {settings.public_url} is this machine on port {port}, but the gateway "
                f"listens on GATEWAY_PORT={settings.gateway_port}: unset PUBLIC_URL to derive it"
            )
    if settings.amocrm_redirect_uri.rstrip("/") != f"{public_base}/auth":
        found.append(
            f"AMOCRM_REDIRECT_URI {settings.amocrm_redirect_uri} is not <PUBLIC_URL>/auth "
            f"({public_base}/auth): amoCRM would send the OAuth code elsewhere; unset it to derive"
        )
    hook = environ.get("SANDBOX_AMOCRM_DISABLE_HOOK_URL", "")
    if settings.sandbox_mode and hook and hook.rstrip("/") != f"{public_base}/auth/disable":
        found.append(
            f"SANDBOX_AMOCRM_DISABLE_HOOK_URL {hook} is not <PUBLIC_URL>/auth/disable: the "
            "emulator's disable hook would miss the gateway; unset it to derive"
        )
    if not settings.sandbox_mode and settings.amocrm_api_url:
        found.append(
            f"AMOCRM_API_URL={settings.amocrm_api_url} outside SANDBOX_MODE: every amoCRM call "
            "goes there instead of the account's own host"
        )
    if settings.sandbox_mode:
        placeholders = [
            name.upper()
            for name in ("amocrm_client_secret", "encryption_key", "admin_token")
            if settings.secret_value(name).startswith(PLACEHOLDER_PREFIX)
        ]
        if placeholders:
            found.append(
                f"placeholder secrets ({', '.join(placeholders)}): fine for the sandbox, refused "
                "outside SANDBOX_MODE"
            )
    return found
