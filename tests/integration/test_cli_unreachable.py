"""MySQL or beanstalkd unreachable: every command says so in one line and exits 1 (issue 17).

Run as an operator runs them, through the `amosync` console script in a fresh process: the
wrapper that turns infrastructure failures into one line lives there, not in typer's runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.stack import free_port

pytestmark = pytest.mark.integration

AMOSYNC = str(Path(sys.executable).parent / "amosync")

COMMANDS = [
    ["status"],
    ["workers", "list"],
    ["workers", "add", "-t", "full-sync", "-w", "x"],
    ["workers", "delete", "-t", "full-sync", "-w", "x"],
    ["workers", "clear"],
    ["queue", "buried"],
    ["queue", "stats"],
    ["queue", "kick", "full-sync"],
    ["sync", "acme"],
    ["contacts", "acme"],
    ["rotate-key"],
    ["accounts", "list"],
    ["accounts", "refresh", "acme"],
    ["update-tokens"],
    ["migrate"],
]


@pytest.fixture(scope="module")
def unreachable_env() -> dict[str, str]:
    # Ports nothing listens on: refused at once, as with MySQL or beanstalkd stopped.
    return {"MYSQL_PORT": str(free_port()), "BEANSTALK_PORT": str(free_port())}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_prints_one_line_and_exits_1(
    command: list[str], unreachable_env: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [AMOSYNC, *command],
        env={**os.environ, **unreachable_env, "COLUMNS": "80"},
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    mysql, beanstalk = unreachable_env["MYSQL_PORT"], unreachable_env["BEANSTALK_PORT"]
    assert f"127.0.0.1:{mysql} is unreachable" in lines[0] or (
        f"127.0.0.1:{beanstalk}" in lines[0] and "beanstalkd" in lines[0]
    ), lines[0]
