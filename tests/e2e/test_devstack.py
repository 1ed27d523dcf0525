"""`amosync dev` as a newcomer runs it: from a directory holding a `.env`, stopped with Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pymysql
import pytest
import requests

from devstack.stack import FUNCTIONS, free_port
from shared.crypto import generate_key
from shared.settings import Settings
from tests.conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER

pytestmark = pytest.mark.e2e

AMOSYNC = str(Path(sys.executable).parent / "amosync")
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def _free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports (the dev stack numbers functions from a base)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def _processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (only `.env` puts it there)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class DevDir:
    cwd: Path
    dotenv: dict[str, str]
    env: dict[str, str]
    gateway_port: int
    beanstalk_port: int


@pytest.fixture
def dev_dir(tmp_path: Path) -> Iterator[DevDir]:
    """A working directory with a `.env`; ports that must win over it come from the environment."""
    database = f"amosync_test_dev_{uuid.uuid4().hex[:8]}"
    ports = {
        "gateway": free_port(),
        "beanstalk": free_port(),
        "amocrm": free_port(),
        "unisender": free_port(),
        "functions": _free_port_run(len(FUNCTIONS)),
    }
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    values = {
        "SANDBOX_MODE": "true",
        "MYSQL_HOST": MYSQL_HOST,
        "MYSQL_PORT": str(MYSQL_PORT),
        "MYSQL_USER": MYSQL_USER,
        "MYSQL_PASSWORD": MYSQL_PASSWORD,
        "MYSQL_DATABASE": database,
        "AMOCRM_CLIENT_ID": str(uuid.uuid4()),
        "AMOCRM_CLIENT_SECRET": "change-me-client-secret",
        "AMOCRM_REDIRECT_URI": f"{gateway}/auth",
        "PUBLIC_URL": gateway,
        "ENCRYPTION_KEY": generate_key(),
        "ADMIN_TOKEN": "change-me-admin-token",
        # Wrong on purpose: the real environment (below) must win over .env, as in Settings.
        "GATEWAY_PORT": "1",
        "BEANSTALK_PORT": "2",
        "SANDBOX_AMOCRM_PORT": str(ports["amocrm"]),
        "SANDBOX_UNISENDER_PORT": str(ports["unisender"]),
        "DEV_FUNCTION_PORT_BASE": str(ports["functions"]),
        "SANDBOX_UNISENDER_KEYS": f"devkey{secrets.token_hex(4)}",
        "AMOSYNC_DEVSTACK_MARKER": uuid.uuid4().hex,
    }
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTING_NAMES and not k.startswith(("SANDBOX_", "DEV_", "AMOCRM_"))
    }
    env["GATEWAY_PORT"] = str(ports["gateway"])
    env["BEANSTALK_PORT"] = str(ports["beanstalk"])
    yield DevDir(tmp_path, values, env, ports["gateway"], ports["beanstalk"])
    conn = pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        conn.close()


def _wait_up(proc: subprocess.Popen[str], log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if "amosync is up" in text:
            return
        if proc.poll() is not None:
            pytest.fail(f"amosync dev exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"amosync dev not up in {timeout}s:\n{log.read_text()[-3000:]}")


def _kill_leftovers(proc: subprocess.Popen[str], marker: str) -> None:
    """After a test: the stack's process group, and anything else started with its `.env`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for pid in _processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_dev(dev_dir: DevDir, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            [AMOSYNC, "dev"],
            cwd=dev_dir.cwd,
            env=dev_dir.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def test_dev_runs_from_dotenv_and_ctrl_c_stops_everything(dev_dir: DevDir) -> None:
    dotenv = dev_dir.dotenv
    log = dev_dir.cwd / "dev.log"
    proc = _start_dev(dev_dir, log)
    marker = dotenv["AMOSYNC_DEVSTACK_MARKER"]
    try:
        _wait_up(proc, log)
        gateway = f"http://127.0.0.1:{dev_dir.gateway_port}"
        for function in FUNCTIONS:
            resp = requests.get(f"{gateway}/{function}/healthz?deep=1", timeout=10)
            assert resp.status_code == 200, (function, resp.text)
            assert resp.json()["checks"] == {"mysql": "ok", "beanstalk": "ok"}

        # The consent page knows amosync's client id: .env reached the amoCRM emulator.
        start = requests.get(
            f"{gateway}/auth", params={"name": "devcheck"}, allow_redirects=False, timeout=10
        )
        assert start.status_code == 302, start.text
        consent_url = start.headers["Location"]
        assert consent_url.startswith(f"http://127.0.0.1:{dotenv['SANDBOX_AMOCRM_PORT']}/oauth")
        assert parse_qs(urlsplit(consent_url).query)["client_id"] == [dotenv["AMOCRM_CLIENT_ID"]]
        consent = requests.get(consent_url, timeout=10)
        assert consent.status_code == 200, consent.text
        assert "Unknown integration" not in consent.text

        # ... and the Unisender emulator knows the key from SANDBOX_UNISENDER_KEYS.
        key = dotenv["SANDBOX_UNISENDER_KEYS"]
        unisender = f"http://127.0.0.1:{dotenv['SANDBOX_UNISENDER_PORT']}"
        assert requests.get(f"{unisender}/_sandbox/keys/{key}", timeout=10).status_code == 200

        # Every child got the whole .env (the marker is in no other environment).
        assert len(_processes_with(marker)) >= len(FUNCTIONS) + 3 + 1 + 2

        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_with(marker) == [], "processes left behind after Ctrl-C"
        ports = [
            dev_dir.gateway_port,
            dev_dir.beanstalk_port,
            int(dotenv["SANDBOX_AMOCRM_PORT"]),
            int(dotenv["SANDBOX_UNISENDER_PORT"]),
        ]
        assert not [p for p in ports if _listening(p)]
    finally:
        _kill_leftovers(proc, marker)


def _amosync(dev_dir: DevDir, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AMOSYNC, *args],
        cwd=dev_dir.cwd,
        env=dev_dir.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _pid_of(marker: str, argv_part: bytes) -> int | None:
    for pid in _processes_with(marker):
        with contextlib.suppress(OSError):
            if argv_part in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def _stop_dev(proc: subprocess.Popen[str], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0, log.read_text()[-3000:]


def test_operator_first_hour_port_change_restarts_and_crashes(dev_dir: DevDir) -> None:
    """Issue 17: another GATEWAY_PORT and nothing else; the CLI finds the emulators; a killed
    consumer comes back; a restarted stack runs the demo again without stale state."""
    # No PUBLIC_URL / AMOCRM_REDIRECT_URI: both derive from GATEWAY_PORT (the environment's).
    dotenv = {
        k: v
        for k, v in dev_dir.dotenv.items()
        if k not in ("PUBLIC_URL", "AMOCRM_REDIRECT_URI", "ADMIN_TOKEN")
    }
    (dev_dir.cwd / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    marker = dotenv["AMOSYNC_DEVSTACK_MARKER"]
    log = dev_dir.cwd / "dev.log"
    proc = _start_dev(dev_dir, log)
    try:
        _wait_up(proc, log)
        text = log.read_text()
        # An empty secret in sandbox mode is generated into .env, and said so.
        assert "generated ADMIN_TOKEN into" in text
        assert re.search(r"^ADMIN_TOKEN=\S{20,}$", (dev_dir.cwd / ".env").read_text(), re.M)
        assert "starting functions: auth, widget" in text  # progress while starting

        # The CLI, started next to the stack, uses the stack's emulators, not amocrm.ru.
        config = _amosync(dev_dir, "config", "--json")
        settings = json.loads(config.stdout)["settings"]
        amocrm = f"http://127.0.0.1:{dotenv['SANDBOX_AMOCRM_PORT']}"
        assert settings["AMOCRM_API_URL"]["value"] == amocrm, config.stdout
        assert settings["PUBLIC_URL"]["value"] == f"http://localhost:{dev_dir.gateway_port}"

        first = _amosync(dev_dir, "demo", "--contacts", "2")
        assert first.returncode == 0, first.stdout + first.stderr

        # kill -9 of a consumer: restarted with backoff, the stack keeps running.
        victim = _pid_of(marker, b"contact-events")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "worker-contact-events restarted" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "worker-contact-events exited (-9); restarting it in 1s" in log.read_text()
        reborn = _pid_of(marker, b"contact-events")
        assert reborn is not None and reborn != victim

        _stop_dev(proc, log)
        assert not (dev_dir.cwd / ".amosync-dev.json").exists()

        # Restarted: the emulators are empty again, and so is the database (said so); the demo
        # runs again and nothing stale is touched.
        log2 = dev_dir.cwd / "dev2.log"
        proc = _start_dev(dev_dir, log2)
        _wait_up(proc, log2)
        assert "reset: the emulators start empty" in log2.read_text()
        second = _amosync(dev_dir, "demo", "--contacts", "2")
        assert second.returncode == 0, second.stdout + second.stderr
        workdir = Path(re.findall(r"logs in (\S+?)\)", log2.read_text())[-1])
        logs = "".join(p.read_text(errors="replace") for p in workdir.glob("*.log"))
        assert "Cannot decrypt" not in logs and "List not found" not in logs
        _stop_dev(proc, log2)
    finally:
        _kill_leftovers(proc, marker)
