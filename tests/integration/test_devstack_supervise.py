"""`amosync dev`'s supervision and its hand-over to the CLI, on real processes (issue 17)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack.run import DEV_STATE_FILE, apply_dev_stack_state, generate_sandbox_secrets, supervise
from devstack.stack import Ports, Stack
from shared.settings import Settings

pytestmark = pytest.mark.integration


def test_a_dead_process_is_restarted_and_a_crash_loop_gives_up(tmp_path: Path) -> None:
    stack = Stack(ports=Ports.free(), env={}, workdir=tmp_path)
    sleeper = stack._spawn("sleeper", ["sleep", "60"])
    stack._spawn("crasher", ["sh", "-c", "echo boom-$$; exit 3"])
    stop = threading.Event()
    outcome: list[bool] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            supervise(stack, stop.is_set, delays=(0.2, 0.4), max_crashes=3, window=60, poll=0.05)
        )
    )
    try:
        runner.start()
        assert sleeper.popen is not None
        os.kill(sleeper.popen.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while stack.processes["sleeper"].popen is sleeper.popen:
            assert time.monotonic() < deadline, "the killed process was not restarted"
            time.sleep(0.05)
        runner.join(20)
        # The crasher exits at once every time: after three restarts the stack is given up.
        assert outcome == [True]
        reborn = stack.processes["sleeper"].popen
        assert reborn is not None and reborn.poll() is None
        assert stack.log_tail("crasher").count("boom-") == 4
    finally:
        stop.set()
        runner.join(5)
        stack.stop()


def test_the_cli_takes_a_running_dev_stacks_settings(tmp_path: Path) -> None:
    state = {"AMOCRM_API_URL": "http://127.0.0.1:18101", "BEANSTALK_PORT": "11999"}
    # A process whose command line names amosync stands in for `amosync dev`.
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "amosync", "dev"]
    )
    try:
        # Until exec, /proc shows the forked pytest's command line: wait for the stand-in's own.
        deadline = time.monotonic() + 20
        while b"amosync" not in Path(f"/proc/{stand_in.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (tmp_path / DEV_STATE_FILE).write_text(json.dumps({"pid": stand_in.pid, "env": state}))
        environ = {"BEANSTALK_PORT": "11300"}  # set by the operator: wins
        assert apply_dev_stack_state(environ, tmp_path) == {
            "AMOCRM_API_URL": "http://127.0.0.1:18101"
        }
        assert environ["BEANSTALK_PORT"] == "11300"
    finally:
        stand_in.kill()
        stand_in.wait(5)
    # The stack is gone (a stale file after a kill -9): nothing is taken from it.
    assert apply_dev_stack_state({}, tmp_path) == {}


def test_sandbox_secrets_are_generated_into_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "")
    monkeypatch.delenv("ENCRYPTION_KEY")
    dotenv = tmp_path / ".env"
    dotenv.write_text("SANDBOX_MODE=true\n")
    assert generate_sandbox_secrets(Settings(), dotenv) == ["ENCRYPTION_KEY", "ADMIN_TOKEN"]
    monkeypatch.delenv("ADMIN_TOKEN")
    reread = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    assert len(reread.admin_token.get_secret_value()) >= 20
    assert reread.encryption_key.get_secret_value()
    monkeypatch.setenv("SANDBOX_MODE", "false")
    assert generate_sandbox_secrets(reread, dotenv) == []
