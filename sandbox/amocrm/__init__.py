"""amoCRM (Kommo) emulator: OAuth, REST v4 subset, webhooks, control API."""

from sandbox.amocrm.app import create_app
from sandbox.amocrm.config import SandboxConfig

__all__ = ["SandboxConfig", "create_app"]
