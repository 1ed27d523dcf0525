"""Unisender API emulator: `create_app(config)` or `python -m sandbox.unisender`."""

from sandbox.unisender.app import create_app
from sandbox.unisender.state import SandboxConfig

__all__ = ["SandboxConfig", "create_app"]
