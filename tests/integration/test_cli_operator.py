"""Smaller rough edges of the operator's first hour (issue 17): Ctrl-C while following a sync,
and where `widget build` puts the zip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from shared.db import Database
from tests.integration.test_cli_workers import _account

pytestmark = pytest.mark.integration

AMOSYNC = str(Path(sys.executable).parent / "amosync")


def test_ctrl_c_while_following_a_sync_says_the_run_goes_on(
    db: Database, beanstalkd: Any, tmp_path: Path
) -> None:
    name = f"cc{uuid.uuid4().hex[:6]}"
    _account(db, name=name, expires_in=timedelta(hours=5))
    # No consumer watches this test's tubes: the run stays queued and the CLI keeps following.
    proc = subprocess.Popen(
        [AMOSYNC, "sync", name, "--poll", "0.2"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not db.fetch_one(
            "SELECT r.id FROM sync_runs r JOIN accounts a ON a.id = r.account_id WHERE a.name = %s",
            (name,),
        ):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(1)  # following by now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert "stopped following run #" in err and f"amosync sync {name}" in err


def test_widget_build_writes_into_build_not_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["widget", "build", "--public-url", "https://sync.example"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "build" / "widget.zip").stat().st_size > 0
    assert not (tmp_path / "widget.zip").exists()
    custom = tmp_path / "out" / "w.zip"
    result = CliRunner().invoke(
        app, ["widget", "build", "--public-url", "https://sync.example", "--out", str(custom)]
    )
    assert result.exit_code == 0 and custom.exists()
