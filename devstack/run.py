"""`amosync dev`: the local stack in the foreground, configured from `.env` like the containers."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.stack import FUNCTIONS, Ports, Stack
from shared.db import mysql_problem


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
    problem = mysql_problem(settings)
    if problem:
        print(f"amosync dev: {problem}", file=sys.stderr)
        return 1
    # Stack overlays these on os.environ, so only what os.environ lacks comes from .env.
    env = {k: v for k, v in environ.items() if k not in os.environ}
    if with_sandbox:
        env["AMOCRM_API_URL"] = settings.amocrm_api_url or f"http://127.0.0.1:{ports.amocrm}"
        env["UNISENDER_API_URL"] = f"http://127.0.0.1:{ports.unisender}/ru/api"
        env["AMOCRM_AUTH_URL"] = f"http://127.0.0.1:{ports.amocrm}/oauth"
        # The emulator reads os.environ only: hand it the derived hook unless one is set.
        if not environ.get("SANDBOX_AMOCRM_DISABLE_HOOK_URL"):
            env["SANDBOX_AMOCRM_DISABLE_HOOK_URL"] = (
                f"{settings.public_url.rstrip('/')}/auth/disable"
            )
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
