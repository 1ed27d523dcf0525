"""Every setting is documented: in .env.example and in the README's configuration table."""

from pathlib import Path

import pytest

from shared.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

# Internal knobs with safe defaults that operators never need to set.
UNDOCUMENTED = {"MYSQL_CONNECT_TIMEOUT"}


@pytest.mark.parametrize(
    "name", sorted(f.upper() for f in Settings.model_fields if f.upper() not in UNDOCUMENTED)
)
def test_setting_is_documented(name: str) -> None:
    assert f"\n{name}=" in (ROOT / ".env.example").read_text(), f"{name} missing in .env.example"
    assert f"`{name}`" in (ROOT / "README.md").read_text(), f"{name} missing in README.md"
