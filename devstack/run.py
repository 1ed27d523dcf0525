"""`amosync dev`: the local stack in the foreground, configured from `.env` like the containers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

from devstack.stack import FUNCTIONS, Ports, Stack
from shared.db import mysql_problem, server_connection
from shared.settings import REQUIRED_SECRETS, Settings

# Written next to `.env` while `amosync dev` runs: what it changed for its processes (the
# emulators' URLs, its ports). Every other `amosync` command started in that directory reads it,
# so `amosync contacts acme` talks to the emulators the stack talks to, not to amocrm.ru.
DEV_STATE_FILE = ".amosync-dev.json"

# A crashed process is restarted after these delays (the n-th crash in a row waits the n-th);
# more than MAX_CRASHES crashes within CRASH_WINDOW_SECONDS stop the stack (it is not going to
# get better by itself), as a supervisor or compose's `restart:` with a limit would.
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
MAX_CRASHES = 5
CRASH_WINDOW_SECONDS = 120.0


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


def generate_sandbox_secrets(settings: Settings, dotenv_path: Path) -> list[str]:
    """Sandbox mode with empty secrets: generate them into `.env` (amosync and the emulator read
    the same file, so they agree). Returns the names written; outside sandbox mode, none."""
    from dotenv import set_key

    from shared.crypto import generate_key

    if not settings.sandbox_mode:
        return []
    makers: dict[str, Callable[[], str]] = {
        "amocrm_client_id": lambda: str(uuid.uuid4()),
        "amocrm_client_secret": lambda: secrets.token_urlsafe(32),
        "encryption_key": generate_key,
        "admin_token": lambda: secrets.token_urlsafe(24),
    }
    missing = [name for name in REQUIRED_SECRETS if not settings.secret_value(name)]
    dotenv_path.touch(exist_ok=True)
    for name in missing:
        set_key(str(dotenv_path), name.upper(), makers[name](), quote_mode="never")
    return [name.upper() for name in missing]


def reset_dev_database(settings: Settings) -> None:
    """Drop the dev database: the emulators start empty, and accounts, keys and list ids stored
    against their previous run would point at nothing ("List not found", reused ids)."""
    name = settings.mysql_database
    # An identifier cannot be a parameter: accept only the alphabet `amosync migrate` accepts.
    if not name.replace("_", "").isalnum():
        raise ValueError(f"refusing unusual database name {name!r}")
    conn = server_connection(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def _pid_is_dev_stack(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A recycled pid belongs to something else: the dev stack's command line names amosync.
    return not cmdline.exists() or b"amosync" in cmdline.read_bytes()


def apply_dev_stack_state(
    environ: MutableMapping[str, str], directory: Path | None = None
) -> dict[str, str]:
    """Take a running dev stack's settings (in `directory`, default the working directory) for
    every name the environment does not set itself; returns what was applied."""
    path = (directory or Path.cwd()) / DEV_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or not _pid_is_dev_stack(int(state.get("pid", 0))):
        return {}
    applied = {k: str(v) for k, v in dict(state.get("env", {})).items() if k not in environ}
    environ.update(applied)
    return applied


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_dev_stack(*, with_sandbox: bool) -> int:
    """Foreground `make dev`: start everything, print where it is, restart what crashes, stop
    all on Ctrl-C."""
    from pydantic import ValidationError

    from shared.settings import get_settings

    dotenv_path = Path(".env")
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        hint = "" if dotenv_path.exists() else f" (no .env in {Path.cwd()}: cp .env.example .env)"
        _say(f"amosync dev: invalid settings: {problems}{hint}")
        return 1
    generated = generate_sandbox_secrets(settings, dotenv_path) if with_sandbox else []
    if generated:
        _say(
            f"amosync dev: generated {', '.join(generated)} into {dotenv_path.resolve()} "
            "(SANDBOX_MODE; they were empty)"
        )
        get_settings.cache_clear()
        settings = get_settings()
    environ = dotenv_environment(dotenv_path)
    ports = dev_ports(environ, gateway=settings.gateway_port, beanstalk=settings.beanstalk_port)
    if shutil.which("beanstalkd") is None or shutil.which("nginx") is None:
        _say("amosync dev needs beanstalkd and nginx on PATH (apt-get install beanstalkd nginx)")
        return 1
    problem = mysql_problem(settings)
    if problem:
        _say(f"amosync dev: {problem}")
        return 1
    # Stack overlays these on os.environ, so only what os.environ lacks comes from .env.
    env = {k: v for k, v in environ.items() if k not in os.environ}
    overrides = {
        "BEANSTALK_HOST": "127.0.0.1",
        "BEANSTALK_PORT": str(ports.beanstalk),
        "GATEWAY_PORT": str(ports.gateway),
    }
    if with_sandbox:
        overrides["AMOCRM_API_URL"] = settings.amocrm_api_url or f"http://127.0.0.1:{ports.amocrm}"
        overrides["UNISENDER_API_URL"] = f"http://127.0.0.1:{ports.unisender}/en/api"
        overrides["AMOCRM_AUTH_URL"] = f"http://127.0.0.1:{ports.amocrm}/oauth"
        # The emulator reads os.environ only, not Settings: give it the effective (possibly
        # derived) URLs, or it would redirect the consent page to its own default, :8080.
        overrides["PUBLIC_URL"] = settings.public_url
        overrides["AMOCRM_REDIRECT_URI"] = settings.amocrm_redirect_uri
        if not environ.get("SANDBOX_AMOCRM_DISABLE_HOOK_URL"):
            overrides["SANDBOX_AMOCRM_DISABLE_HOOK_URL"] = (
                f"{settings.public_url.rstrip('/')}/auth/disable"
            )
        if settings.sandbox_mode:
            # The emulators keep no state across runs; the database must not either (never
            # half of each: accounts whose amoCRM account and Unisender list are gone).
            reset_dev_database(settings)
            _say(
                f"amosync dev: database {settings.mysql_database!r} reset: the emulators start "
                "empty, so what was stored against their last run is dropped with them"
            )
    env.update(overrides)
    workdir = Path(tempfile.mkdtemp(prefix="amosync-dev-"))
    stack = Stack(
        ports=ports,
        env=env,
        workdir=workdir,
        with_sandbox=with_sandbox,
        progress=lambda step: _say(f"  starting {step} ..."),
    )
    state_path = Path.cwd() / DEV_STATE_FILE
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
    failed = False
    try:
        _say(f"starting amosync (logs in {workdir}) ...")
        try:
            stack.start()
        except KeyboardInterrupt:
            return 130
        except RuntimeError as exc:
            _say(f"amosync dev: {exc}")
            return 1
        started = True
        state_path.write_text(json.dumps({"pid": os.getpid(), "env": overrides}))
        print(f"amosync is up: {stack.gateway_url} (logs in {workdir}); Ctrl-C stops everything")
        if with_sandbox:
            print(f"  amoCRM sandbox:    http://127.0.0.1:{ports.amocrm}")
            print(f"  Unisender sandbox: http://127.0.0.1:{ports.unisender}")
            print("  next: `amosync demo` runs the whole flow against it", flush=True)
        failed = supervise(stack, lambda: stopping)
    finally:
        _say("stopping amosync ...")
        stack.stop()
        if started:
            state_path.unlink(missing_ok=True)
    return 1 if failed else 0


def supervise(
    stack: Stack,
    stopping: Callable[[], bool],
    *,
    delays: tuple[float, ...] = RESTART_DELAYS,
    max_crashes: int = MAX_CRASHES,
    window: float = CRASH_WINDOW_SECONDS,
    poll: float = 0.5,
) -> bool:
    """Restart each process that dies, after a growing delay, until `stopping()` says so.

    Returns True when a process crashed more than `max_crashes` times within `window` seconds
    (the stack is given up), False on a normal stop.
    """
    crashes: dict[str, list[float]] = {}
    due: dict[str, float] = {}
    while not stopping():
        now = time.monotonic()
        for name, proc in list(stack.processes.items()):
            if name in due or proc.popen is None or proc.popen.poll() is None:
                continue
            recent = [t for t in crashes.get(name, []) if now - t < window] + [now]
            crashes[name] = recent
            tail = stack.log_tail(name)
            if len(recent) > max_crashes:
                _say(
                    f"{name} exited ({proc.popen.returncode}) {len(recent)} times within "
                    f"{window:.0f}s; giving up and stopping the stack. The last lines of "
                    f"{proc.log_path}:\n{tail}"
                )
                return True
            delay = delays[min(len(recent), len(delays)) - 1]
            _say(
                f"{name} exited ({proc.popen.returncode}); restarting it in {delay:.0f}s "
                f"(crash {len(recent)} of at most {max_crashes} in {window:.0f}s). The last lines "
                f"of {proc.log_path}:\n{tail}"
            )
            due[name] = now + delay
        for name, at in list(due.items()):
            if now >= at:
                del due[name]
                stack.restart(name)
                popen = stack.processes[name].popen
                _say(f"{name} restarted (pid {popen.pid if popen else '?'})")
        time.sleep(poll)
    return False
