"""Test harness: a fresh MySQL database per run, beanstalkd on a free port, the whole local stack.

Nothing here depends on something started by hand: each fixture starts what it needs and waits for
it. Environment variables are isolated per test.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cli.devstack import Ports, Stack, beanstalkd_command, sandbox_env, wait_tcp

MYSQL_HOST = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("TEST_MYSQL_PASSWORD", "")

RUN_ID = uuid.uuid4().hex[:8]


def reset_caches() -> None:
    """Forget every cached settings-derived object so the next call reads the environment."""
    from shared.crypto import get_secret_box
    from shared.db import get_database
    from shared.jobqueue import get_queue
    from shared.settings import get_settings

    for cached in (get_settings, get_database, get_queue, get_secret_box):
        cached.cache_clear()


@pytest.fixture(scope="session")
def ports() -> Ports:
    return Ports.free()


@pytest.fixture(scope="session")
def session_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"amosync-test-{RUN_ID}-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def base_env(ports: Ports) -> dict[str, str]:
    """The configuration every test (and every stack process) sees."""
    mysql = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": MYSQL_USER, "password": MYSQL_PASSWORD}
    return {
        **sandbox_env(ports, mysql=mysql, database=f"amosync_test_{RUN_ID}"),
        "BEANSTALK_HOST": "127.0.0.1",
        "BEANSTALK_PORT": str(ports.beanstalk),
        "AMOCRM_ALLOWED_DOMAINS": "amocrm.ru,amocrm.com,kommo.com",
        "GATEWAY_PORT": str(ports.gateway),
        "LOG_LEVEL": "INFO",
        "SANDBOX_AMOCRM_DISABLE_HOOK_URL": f"http://127.0.0.1:{ports.gateway}/auth/disable",
        "JOB_BACKOFF_BASE_SECONDS": "1",
        "JOB_BACKOFF_MAX_SECONDS": "2",
        # Every test reaches the stack from 127.0.0.1 and many send wrong credentials on
        # purpose; the limiter itself is tested with its defaults (tests/hostile/test_web_*).
        "ADMIN_AUTH_MAX_FAILURES": "100000",
    }


_ISOLATED_PREFIXES = (
    "MYSQL_",
    "BEANSTALK_",
    "AMOCRM_",
    "UNISENDER_",
    "SANDBOX_",
    "JOB_",
    "TOKEN_",
    "RECONCILE_",
    "FULL_RECONCILE_",
    "ADMIN_AUTH_",
)
_ISOLATED_NAMES = ("PUBLIC_URL", "GATEWAY_PORT", "ENCRYPTION_KEY", "ADMIN_TOKEN", "LOG_LEVEL")


@pytest.fixture(autouse=True)
def isolated_env(
    monkeypatch: pytest.MonkeyPatch, base_env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """Every test starts from the base environment; whatever it changes is undone after it."""
    for key in list(os.environ):
        if key.startswith(_ISOLATED_PREFIXES) or key in _ISOLATED_NAMES:
            monkeypatch.delenv(key, raising=False)
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    # Settings read .env from the working directory; tests must not see a developer's file.
    monkeypatch.chdir(Path(__file__).parent)
    reset_caches()
    yield base_env
    reset_caches()


def _mysql_admin() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host=MYSQL_HOST,
        port=MYSQL_PORT,
        user=MYSQL_USER,
        password=MYSQL_PASSWORD,
        connect_timeout=5,
    )


@pytest.fixture(scope="session")
def mysql_database(base_env: dict[str, str]) -> Iterator[str]:
    """A fresh database for this run, migrated; dropped at the end."""
    from shared.migrate import apply_migrations
    from shared.settings import Settings

    name = base_env["MYSQL_DATABASE"]
    env_backup = dict(os.environ)
    os.environ.update(base_env)
    try:
        apply_migrations(Settings())
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    yield name
    conn = _mysql_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


@pytest.fixture
def db(mysql_database: str):  # type: ignore[no-untyped-def]
    from shared.db import get_database

    return get_database()


class Beanstalkd:
    """A beanstalkd process of the test session, restartable (its binlog survives)."""

    def __init__(self, port: int, binlog: Path) -> None:
        self.port = port
        self.binlog = binlog
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.binlog.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            beanstalkd_command(self.port, str(self.binlog)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_tcp(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def beanstalkd_server(ports: Ports, session_tmp: Path) -> Iterator[Beanstalkd]:
    server = Beanstalkd(ports.beanstalk, session_tmp / "beanstalkd-binlog")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def beanstalkd(beanstalkd_server: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> Beanstalkd:
    """beanstalkd with a tube prefix of this test's own, so tests never see each other's jobs."""
    if beanstalkd_server.proc is None or beanstalkd_server.proc.poll() is not None:
        beanstalkd_server.start()
    monkeypatch.setenv("BEANSTALK_TUBE_PREFIX", f"t{uuid.uuid4().hex[:10]}-")
    reset_caches()
    return beanstalkd_server


@pytest.fixture(scope="session")
def stack(
    ports: Ports,
    base_env: dict[str, str],
    mysql_database: str,
    session_tmp: Path,
    beanstalkd_server: Beanstalkd,
) -> Iterator[Stack]:
    """The whole local stack (functions, consumers, scheduler, nginx, emulators) on free ports."""
    workdir = session_tmp / "stack"
    the_stack = Stack(ports=ports, env=base_env, workdir=workdir, external_beanstalkd=True)
    try:
        the_stack.start()
    except Exception:
        the_stack.stop()
        for log_file in sorted(workdir.glob("*.log")):
            print(f"--- {log_file.name}\n{log_file.read_text()[-3000:]}")
        raise
    yield the_stack
    the_stack.stop()


@dataclass
class ForeignHost:
    """A server on 127.0.0.1 that answers 200 to anything and records each path it was sent."""

    port: int
    hits: list[str]


@pytest.fixture
def foreign_host() -> Iterator[ForeignHost]:
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ForeignHost(server.server_address[1], hits)
    server.shutdown()
