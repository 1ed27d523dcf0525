"""The no-Docker stack: the very commands the containers run, as local processes.

`amosync dev` runs it for a person; the end-to-end tests run it on free ports. The commands here
and in docker-compose.yml are compared by a test, so the two paths cannot drift apart.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_DIR = ROOT / "gateway"

FUNCTIONS = ("auth", "widget", "webhook", "contacts", "sync")
WORKER_TYPES = ("token-refresh", "contact-events", "full-sync")

# Per-function environment, as docker-compose.yml sets it: ingest is I/O bound (one beanstalkd
# put per request), so the webhook gets two gunicorn workers with more threads (see BENCHMARKS.md).
FUNCTION_ENV: dict[str, dict[str, str]] = {"webhook": {"WORKERS": "2", "THREADS": "16"}}


def function_command(name: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """How every function container starts (see Dockerfile / docker-compose.yml)."""
    return [
        "functions-framework",
        "--source",
        f"functions/{name}/main.py",
        "--target",
        name,
        "--host",
        host,
        "--port",
        str(port),
    ]


def worker_command(worker_type: str) -> list[str]:
    return ["amosync", "worker", "run", worker_type]


SCHEDULER_COMMAND = ["python", "-m", "scheduler"]
MIGRATE_COMMAND = ["amosync", "migrate"]


def beanstalkd_command(port: int, binlog: str, host: str = "127.0.0.1") -> list[str]:
    """beanstalkd with a binlog fsynced on every write: a 200 to amoCRM means the job is on disk."""
    return ["beanstalkd", "-l", host, "-p", str(port), "-b", binlog, "-f", "0"]


def sandbox_command(vendor: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return ["python", "-m", f"sandbox.{vendor}", "--host", host, "--port", str(port)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Ports:
    gateway: int = 8080
    beanstalk: int = 11300
    amocrm: int = 8101
    unisender: int = 8102
    functions: dict[str, int] = field(
        default_factory=lambda: {name: 8201 + i for i, name in enumerate(FUNCTIONS)}
    )

    @classmethod
    def free(cls) -> Ports:
        return cls(
            gateway=free_port(),
            beanstalk=free_port(),
            amocrm=free_port(),
            unisender=free_port(),
            functions={name: free_port() for name in FUNCTIONS},
        )


def sandbox_env(ports: Ports, *, mysql: Mapping[str, object], database: str) -> dict[str, str]:
    """A stack's configuration against both emulators on `ports`, with fresh secrets.

    `mysql` holds pymysql's host, port, user and password; `database` is the stack's own.
    """
    from shared.crypto import generate_key

    gateway = f"http://127.0.0.1:{ports.gateway}"
    return {
        "SANDBOX_MODE": "true",
        "MYSQL_HOST": str(mysql["host"]),
        "MYSQL_PORT": str(mysql["port"]),
        "MYSQL_USER": str(mysql["user"]),
        "MYSQL_PASSWORD": str(mysql["password"]),
        "MYSQL_DATABASE": database,
        "BEANSTALK_TUBE_PREFIX": "",
        "AMOCRM_CLIENT_ID": str(uuid.uuid4()),
        "AMOCRM_CLIENT_SECRET": secrets.token_urlsafe(32),
        "AMOCRM_REDIRECT_URI": f"{gateway}/auth",
        "AMOCRM_AUTH_URL": f"http://127.0.0.1:{ports.amocrm}/oauth",
        "AMOCRM_API_URL": f"http://127.0.0.1:{ports.amocrm}",
        "UNISENDER_API_URL": f"http://127.0.0.1:{ports.unisender}/en/api",
        "PUBLIC_URL": gateway,
        "ENCRYPTION_KEY": generate_key(),
        "ADMIN_TOKEN": secrets.token_urlsafe(24),
    }


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Substitute only our ${AMOSYNC_*} names; nginx's own $variables stay untouched."""
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    return text


def write_gateway_config(prefix: Path, ports: Ports, *, access_log: str | None = None) -> Path:
    """Render the gateway's server block and a local main config into `prefix`."""
    prefix.mkdir(parents=True, exist_ok=True)
    values = {
        "AMOSYNC_PREFIX": str(prefix),
        "AMOSYNC_GATEWAY_LISTEN": f"127.0.0.1:{ports.gateway}",
        "AMOSYNC_ACCESS_LOG": access_log or str(prefix / "access.log"),
        **{f"AMOSYNC_{n.upper()}_UPSTREAM": f"127.0.0.1:{p}" for n, p in ports.functions.items()},
    }
    (prefix / "amosync.conf").write_text(
        render_template((GATEWAY_DIR / "amosync.conf.template").read_text(), values)
    )
    main = prefix / "nginx.conf"
    main.write_text(
        render_template((GATEWAY_DIR / "nginx-local.conf.template").read_text(), values)
    )
    return main


def venv_bin(command: list[str]) -> list[str]:
    """Resolve console scripts and `python` inside the interpreter's own environment."""
    exe_dir = Path(sys.executable).parent
    head = command[0]
    if head == "python":
        return [sys.executable, *command[1:]]
    candidate = exe_dir / head
    if candidate.exists():
        return [str(candidate), *command[1:]]
    return command


@dataclass
class Process:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: Mapping[str, str] | None = None


class Stack:
    """Starts and stops the local stack; every process logs to `<workdir>/<name>.log`."""

    def __init__(
        self,
        *,
        ports: Ports,
        env: Mapping[str, str],
        workdir: Path,
        with_sandbox: bool = True,
        with_scheduler: bool = True,
        workers: tuple[str, ...] = WORKER_TYPES,
        log_to_console: bool = False,
        external_beanstalkd: bool = False,
        function_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.ports = ports
        self.function_env = FUNCTION_ENV if function_env is None else function_env
        self.workdir = workdir
        self.with_sandbox = with_sandbox
        self.with_scheduler = with_scheduler
        self.workers = workers
        self.log_to_console = log_to_console
        self.external_beanstalkd = external_beanstalkd
        self.env = {
            **os.environ,
            **env,
            "BEANSTALK_HOST": "127.0.0.1",
            "BEANSTALK_PORT": str(ports.beanstalk),
            "GATEWAY_PORT": str(ports.gateway),
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, Process] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    def _spawn(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> Process:
        argv = venv_bin(argv)
        log_path = self.workdir / f"{name}.log"
        out = None if self.log_to_console else log_path.open("ab")
        env = {**self.env, **(extra_env or {})}
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        proc = Process(name, argv, popen, log_path, extra_env)
        self.processes[name] = proc
        return proc

    def start_beanstalkd(self) -> None:
        binlog = self.workdir / "beanstalkd-binlog"
        binlog.mkdir(exist_ok=True)
        self._spawn(
            "beanstalkd",
            beanstalkd_command(self.ports.beanstalk, str(binlog)),
        )
        wait_tcp(self.ports.beanstalk)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        proc = self.processes.get(name)
        if proc is None or proc.popen is None or proc.popen.poll() is not None:
            return
        try:
            os.killpg(proc.popen.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(5)

    def restart(self, name: str) -> None:
        proc = self.processes[name]
        self.stop_process(name)
        if name == "beanstalkd":
            self.start_beanstalkd()
        else:
            self._spawn(name, proc.argv, proc.extra_env)

    def start(self) -> None:
        if self.with_sandbox:
            self._spawn("sandbox-amocrm", sandbox_command("amocrm", self.ports.amocrm))
            self._spawn("sandbox-unisender", sandbox_command("unisender", self.ports.unisender))
        if self.external_beanstalkd:
            wait_tcp(self.ports.beanstalk)
        else:
            self.start_beanstalkd()
        migrate = subprocess.run(
            venv_bin(MIGRATE_COMMAND),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrate.stdout}\n{migrate.stderr}")
        for name, port in self.ports.functions.items():
            self._spawn(
                f"function-{name}", function_command(name, port), self.function_env.get(name)
            )
        for worker_type in self.workers:
            self._spawn(f"worker-{worker_type}", worker_command(worker_type))
        if self.with_scheduler:
            self._spawn("scheduler", SCHEDULER_COMMAND)
        nginx_prefix = self.workdir / "nginx"
        conf = write_gateway_config(nginx_prefix, self.ports)
        self._spawn("gateway", ["nginx", "-p", str(nginx_prefix), "-c", str(conf)])
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        urls = [f"http://127.0.0.1:{self.ports.gateway}/{name}/healthz" for name in FUNCTIONS]
        if self.with_sandbox:
            urls += [
                f"http://127.0.0.1:{self.ports.amocrm}/_sandbox/health",
                f"http://127.0.0.1:{self.ports.unisender}/_sandbox/health",
            ]
        pending = list(urls)
        while pending:
            for proc in self.processes.values():
                if proc.popen is not None and proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited early; see {proc.log_path}")
            url = pending[0]
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready in {timeout}s: {pending}")
            time.sleep(0.2)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop_process(name)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"


def wait_tcp(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def dotenv_environment(path: Path | str = ".env") -> dict[str, str]:
    """The `.env` file as Settings read it, overlaid by the real environment (which wins).

    Settings read `.env` themselves, but the emulators and any other child read os.environ only:
    this is what `amosync dev` hands every process it starts.
    """
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    return {**values, **os.environ}


def dev_ports(environ: Mapping[str, str], *, gateway: int, beanstalk: int) -> Ports:
    """The dev stack's ports: the defaults, or the DEV_* / SANDBOX_*_PORT variables."""
    base = int(environ.get("DEV_FUNCTION_PORT_BASE") or 8201)
    return Ports(
        gateway=gateway,
        beanstalk=beanstalk,
        amocrm=int(environ.get("SANDBOX_AMOCRM_PORT") or 8101),
        unisender=int(environ.get("SANDBOX_UNISENDER_PORT") or 8102),
        functions={name: base + i for i, name in enumerate(FUNCTIONS)},
    )


def run_dev_stack(*, with_sandbox: bool) -> int:
    """Foreground `make dev`: start everything, print where it is, stop all on Ctrl-C."""
    from pydantic import ValidationError

    from shared.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        print(f"amosync dev: invalid settings: {problems}", file=sys.stderr)
        return 1
    environ = dotenv_environment()
    ports = dev_ports(environ, gateway=settings.gateway_port, beanstalk=settings.beanstalk_port)
    if shutil.which("beanstalkd") is None or shutil.which("nginx") is None:
        print(
            "amosync dev needs beanstalkd and nginx on PATH (apt-get install beanstalkd nginx)",
            file=sys.stderr,
        )
        return 1
    from cli.ops import mysql_problem

    problem = mysql_problem(settings)
    if problem:
        print(f"amosync dev: {problem}", file=sys.stderr)
        return 1
    # Stack overlays these on os.environ, so only what os.environ lacks comes from .env.
    env = {k: v for k, v in environ.items() if k not in os.environ}
    if with_sandbox:
        env["AMOCRM_API_URL"] = settings.amocrm_api_url or f"http://127.0.0.1:{ports.amocrm}"
        env["UNISENDER_API_URL"] = f"http://127.0.0.1:{ports.unisender}/en/api"
        env["AMOCRM_AUTH_URL"] = f"http://127.0.0.1:{ports.amocrm}/oauth"
    workdir = Path(tempfile.mkdtemp(prefix="amosync-dev-"))
    stack = Stack(ports=ports, env=env, workdir=workdir, with_sandbox=with_sandbox)
    stopping = False
    started = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        if not started:
            # Still waiting for readiness: leave start() now; `finally` stops what it started.
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"starting amosync (logs in {workdir}) ...", flush=True)
        try:
            stack.start()
        except KeyboardInterrupt:
            return 130
        except RuntimeError as exc:
            print(f"amosync dev: {exc}", file=sys.stderr)
            return 1
        started = True
        failed = False
        print(f"amosync is up: {stack.gateway_url} (logs in {workdir}); Ctrl-C stops everything")
        if with_sandbox:
            print(f"  amoCRM sandbox:    http://127.0.0.1:{ports.amocrm}")
            print(f"  Unisender sandbox: http://127.0.0.1:{ports.unisender}")
            print("  next: `amosync demo` runs the whole flow against it", flush=True)
        while not stopping:
            for proc in stack.processes.values():
                if proc.popen is not None and proc.popen.poll() is not None:
                    print(
                        f"{proc.name} exited ({proc.popen.returncode}); see {proc.log_path}",
                        file=sys.stderr,
                    )
                    stopping = failed = True
            time.sleep(0.5)
    finally:
        print("stopping amosync ...", file=sys.stderr, flush=True)
        stack.stop()
    return 1 if failed else 0
