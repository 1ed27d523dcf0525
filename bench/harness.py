"""What every benchmark shares: the machine, a throwaway stack, wrk, and BENCHMARKS.md sections."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from devstack.stack import (
    FUNCTION_ENV,
    ROOT,
    Ports,
    Stack,
    free_port,
    function_command,
    sandbox_env,
)
from devstack.stack import write_gateway_config as render_gateway

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"

# The same MySQL the test suite uses (a database of our own per run, dropped afterwards).
MYSQL = {
    "host": os.environ.get("BENCH_MYSQL_HOST", os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")),
    "port": int(os.environ.get("BENCH_MYSQL_PORT", os.environ.get("TEST_MYSQL_PORT", "3306"))),
    "user": os.environ.get("BENCH_MYSQL_USER", os.environ.get("TEST_MYSQL_USER", "root")),
    "password": os.environ.get("BENCH_MYSQL_PASSWORD", os.environ.get("TEST_MYSQL_PASSWORD", "")),
}


def machine() -> str:
    """nproc, CPU model, memory and load: enough to tell whether two figures are comparable."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        mem = "unknown RAM"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs (nproc), {cpu}, {mem}, Linux {platform.release()}, load {load}"


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run (run_all passes each script its own argv)."""
    args = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return f".venv/bin/python -m {module}{' ' + args if args else ''}"


def record_section(key: str, title: str, body: str, *, argv: list[str] | None = None) -> None:
    """Write (or replace) this benchmark's section of BENCHMARKS.md, leaving the others alone."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = command_line(f"bench.{key}", argv)
    section = (
        f"<!-- bench:{key} -->\n## {title}\n\n"
        f"- command: `{command}`\n- date: {stamp}\n- machine: {machine()}\n\n"
        f"{body.strip()}\n<!-- /bench:{key} -->"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else _preamble()
    pattern = re.compile(
        rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text if text.endswith("\n") else text + "\n")


def _preamble() -> str:
    return (
        "# Benchmarks\n\n"
        "Every figure below comes from a script in `bench/` (all of them: `make bench`). Each\n"
        "section is rewritten by its script with the exact command, the date and the machine.\n"
        "Everything runs on loopback: nginx, the functions under gunicorn, beanstalkd, MariaDB\n"
        "and the amoCRM / Unisender emulators share the machine's cores with the load\n"
        "generator, so absolute figures are lower bounds; the ratios are the point.\n"
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency someone really saw)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def mysql_admin() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(connect_timeout=5, **MYSQL)  # type: ignore[arg-type]


def stack_env(ports: Ports, database: str, **overrides: str) -> dict[str, str]:
    """The configuration of a benchmark stack: the sandbox emulators and fresh secrets."""
    return {
        **sandbox_env(ports, mysql=MYSQL, database=database),
        # Per-request INFO lines would make the benchmark measure log writing.
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


@dataclass
class BenchStack:
    """A running stack of our own: its processes, its database and its environment."""

    stack: Stack
    env: dict[str, str]
    database: str

    @property
    def url(self) -> str:
        return self.stack.gateway_url

    @property
    def amocrm(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.amocrm}"

    @property
    def unisender(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.unisender}"

    @contextmanager
    def settings_env(self) -> Iterator[None]:
        """This process talks to the stack's MySQL and beanstalkd through `shared` too."""
        from testing.caches import reset_caches

        saved = dict(os.environ)
        os.environ.update(self.env)
        os.environ["BEANSTALK_PORT"] = str(self.stack.ports.beanstalk)
        reset_caches()
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            reset_caches()

    def start_function(self, name: str, source: str, target: str, *, env: Mapping[str, str]) -> int:
        """Run another functions-framework target beside the stack; returns its port."""
        port = free_port()
        argv = function_command(target, port)
        argv[argv.index("--source") + 1] = source
        # Same lifecycle (logs, stop) as the stack's own processes.
        self.stack._spawn(name, argv, env)
        wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        return port

    def start_gateway(self, name: str, upstreams: Mapping[str, int]) -> str:
        """A second nginx from the very same template, with some upstreams swapped."""
        ports = Ports(
            gateway=free_port(),
            beanstalk=self.stack.ports.beanstalk,
            functions={**self.stack.ports.functions, **upstreams},
        )
        prefix = self.stack.workdir / name
        conf = render_gateway(prefix, ports)
        self.stack._spawn(name, ["nginx", "-p", str(prefix), "-c", str(conf)])
        url = f"http://127.0.0.1:{ports.gateway}"
        wait_http(f"{url}/healthz", timeout=10)
        return url


def connect_account(bs: BenchStack, *, subdomain: str | None = None) -> Any:
    """An amoCRM sandbox account installed through /auth with Unisender connected (/widget).

    The same flows the end-to-end tests use, so a benchmark measures what a user would set up.
    Returns testing.widget.ConnectedAccount.
    """
    from testing.accounts import install_account
    from testing.widget import connect_unisender

    with bs.settings_env():
        installed = install_account(bs.stack, bs.stack.env, subdomain=subdomain)
        return connect_unisender(bs.stack, bs.stack.env, installed.account_id)


def wait_http(url: str, *, timeout: float) -> None:
    import requests

    def up() -> bool:
        try:
            requests.get(url, timeout=1)
            return True
        except requests.RequestException:
            return False

    wait_until(up, timeout=timeout, what=url)


@contextmanager
def bench_stack(
    *,
    workers: tuple[str, ...] = (),
    function_env: Mapping[str, Mapping[str, str]] | None = None,
    env: Mapping[str, str] | None = None,
    keep_logs: bool = False,
) -> Iterator[BenchStack]:
    """Start the whole stack on free ports with a fresh database; stop and drop it afterwards."""
    for tool in ("nginx", "beanstalkd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"the benchmarks need {tool} on PATH (apt-get install {tool})")
    ports = Ports.free()
    database = f"amosync_bench_{uuid.uuid4().hex[:8]}"
    full_env = stack_env(ports, database, **(env or {}))
    workdir = Path(tempfile.mkdtemp(prefix="amosync-bench-"))
    stack = Stack(
        ports=ports,
        env=full_env,
        workdir=workdir,
        with_scheduler=False,
        workers=workers,
        function_env=FUNCTION_ENV if function_env is None else function_env,
    )
    try:
        stack.start()
        yield BenchStack(stack=stack, env=full_env, database=database)
    except Exception:
        for log_file in sorted(workdir.glob("*.log")):
            tail = log_file.read_text(errors="replace")[-2000:]
            print(f"--- {log_file.name}\n{tail}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        conn = mysql_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        finally:
            conn.close()
        if keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class WrkResult:
    """One wrk run: throughput, latency and how many answers were 2xx."""

    connections: int
    requests: int
    seconds: float
    ok: int
    bad: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(
    url: str, body: bytes, *, connections: int, seconds: float, content_type: str
) -> WrkResult:
    """POST `body` to `url` for `seconds` with `connections` keep-alive connections."""
    if shutil.which("wrk") is None:
        raise SystemExit("the ingest benchmark needs wrk (apt-get install wrk)")
    with tempfile.NamedTemporaryFile(suffix=".body", delete=False) as f:
        f.write(body)
        body_path = f.name
    # One wrk thread per core at most: on a 2-core box the generator must not starve the server.
    threads = max(1, min(connections, (os.cpu_count() or 2) // 2))
    try:
        proc = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                str(WRK_SCRIPT),
                url,
            ],
            env={**os.environ, "BENCH_BODY_FILE": body_path, "BENCH_CONTENT_TYPE": content_type},
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(body_path)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok=data["ok"],
        bad=data["bad"],
        errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )
