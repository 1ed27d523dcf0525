"""docs/modules.md lists every module as it is today (regenerate with `make modules`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.module_map import PACKAGES, ROOT, render

pytestmark = pytest.mark.unit


def test_docs_modules_md_is_current() -> None:
    current = (ROOT / "docs" / "modules.md").read_text()
    assert current == render(), "docs/modules.md is stale: run `make modules`"


def test_every_module_is_listed_and_a_new_one_would_be_noticed(tmp_path: Path) -> None:
    listed = render()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name != "__init__.py":
                assert f"[`{path.relative_to(ROOT).as_posix()}`]" in listed
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "shared" / "new_thing.py").write_text('"""A new concern."""\n')
    assert "| [`shared/new_thing.py`](../shared/new_thing.py) | A new concern. |" in render(
        tmp_path
    )
