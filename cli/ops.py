"""Platform commands: migrate, keys, workers and their registry, queues, the local stack."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.exits import fail, infrastructure_line
from shared.jobs import JOB_TYPES
from shared.logs import configure_logging
from shared.settings import Settings, get_settings

console = Console()
err = Console(stderr=True)

workers_app = typer.Typer(
    help="The worker registry (the original's add-worker / delete-worker / clear-workers).",
    no_args_is_help=True,
)
worker_app = typer.Typer(help="Run a queue-triggered consumer.", no_args_is_help=True)
queue_app = typer.Typer(help="Beanstalk tubes: depths, buried jobs, replay.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    app.command("gen-key")(gen_key)
    app.command("dev")(dev)
    app.add_typer(worker_app, name="worker")
    app.add_typer(workers_app, name="workers")
    app.add_typer(queue_app, name="queue")


def load_settings() -> Settings:
    """get_settings(), or one line on stderr and exit 1 when the configuration is invalid."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(str(e["msg"]) for e in exc.errors()))


def migrate(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Apply nothing; exit 1 while a migration is pending (Kubernetes init containers "
            "wait on this for the migrate Job).",
        ),
    ] = False,
) -> None:
    """Create the database if needed and apply every pending migration."""
    import pymysql

    from shared.db import describe_mysql_error
    from shared.migrate import apply_migrations, pending_migrations

    settings = load_settings()
    configure_logging("migrate", settings.log_level)
    try:
        if check:
            pending = pending_migrations(settings)
            if pending:
                fail(f"{len(pending)} migration(s) pending: {', '.join(pending)}")
            console.print("schema up to date")
            return
        applied = apply_migrations(settings)
    except pymysql.err.MySQLError as exc:
        fail(describe_mysql_error(exc, settings))
    console.print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")


def gen_key() -> None:
    """Print a new ENCRYPTION_KEY (Fernet)."""
    from shared.crypto import generate_key

    console.print(generate_key(), highlight=False)


def dev(
    sandbox: Annotated[
        bool, typer.Option(help="Also run the amoCRM and Unisender emulators.")
    ] = True,
) -> None:
    """Run the whole stack without Docker: the processes the containers run. Ctrl-C stops all."""
    from devstack.run import run_dev_stack

    raise typer.Exit(run_dev_stack(with_sandbox=sandbox))


@worker_app.command("run")
def worker_run(
    worker_type: Annotated[str, typer.Argument(help="token-refresh | contact-events | full-sync")],
    name: Annotated[str | None, typer.Option(help="Registry name (default host-pid).")] = None,
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
) -> None:
    """Start a consumer of the given type (the original's start-update-tokens-worker)."""
    from shared.workers import RegistryError, build_consumer

    configure_logging(f"worker-{worker_type}", get_settings().log_level)
    try:
        consumer = build_consumer(worker_type, name=name)
    except RegistryError as exc:
        fail(str(exc), 2)
        return
    consumer.install_signal_handlers()
    consumer.run(max_jobs=max_jobs)


@workers_app.command("add")
def workers_add(
    worker_type: Annotated[str, typer.Option("--type", "-t", help="Worker type.")],
    name: Annotated[str, typer.Option("--name", "-w", help="Worker name.")],
    max_workers: Annotated[
        int | None, typer.Option("--max", "-m", help="Maximum of this type.")
    ] = None,
) -> None:
    """Register a worker (refused over the type's maximum)."""
    from shared.db import get_database
    from shared.workers import RegistryError, WorkerRegistry

    try:
        WorkerRegistry(get_database()).add(worker_type, name, max_workers=max_workers)
    except RegistryError as exc:
        fail(str(exc))
    console.print(f"registered {worker_type}/{name}")


@workers_app.command("delete")
def workers_delete(
    worker_type: Annotated[str, typer.Option("--type", "-t")],
    name: Annotated[str, typer.Option("--name", "-w")],
) -> None:
    """Remove one worker from the registry."""
    from shared.db import get_database
    from shared.workers import WorkerRegistry

    if not WorkerRegistry(get_database()).delete(worker_type, name):
        fail(f"no worker {worker_type}/{name}")
    console.print(f"deleted {worker_type}/{name}")


@workers_app.command("clear")
def workers_clear(
    worker_type: Annotated[str | None, typer.Option("--type", "-t", help="Only this type.")] = None,
) -> None:
    """Remove every worker (of a type) from the registry."""
    from shared.db import get_database
    from shared.workers import WorkerRegistry

    count = WorkerRegistry(get_database()).clear(worker_type)
    console.print(f"cleared {count} worker(s)")


@workers_app.command("list")
def workers_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Workers with host/pid, last heartbeat, jobs done and whether they are alive."""
    from shared.db import get_database
    from shared.workers import WorkerRegistry

    rows = WorkerRegistry(get_database()).list()
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("type", "name", "host/pid", "last heartbeat", "jobs done", "max", "state")
    for r in rows:
        table.add_row(
            r["type"],
            r["name"],
            f"{r['host'] or '-'}/{r['pid'] or '-'}",
            str(r["last_heartbeat_at"] or "-"),
            str(r["jobs_done"]),
            str(r["max_workers"] or "-"),
            r["state"],
        )
    console.print(table)


@queue_app.command("stats")
def queue_stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ready, reserved, delayed and buried jobs per tube."""
    from shared.jobqueue import QueueUnavailable, get_queue

    try:
        stats = {tube: get_queue().tube_stats(tube) for tube in JOB_TYPES}
    except QueueUnavailable as exc:
        fail(infrastructure_line(exc))
        return
    keys = [
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "total-jobs",
        "current-watching",
    ]
    if as_json:
        print(json.dumps({t: {k: s.get(k, 0) for k in keys} for t, s in stats.items()}))
        return
    table = Table("tube", "ready", "reserved", "delayed", "buried", "total", "consumers")
    for tube, s in stats.items():
        table.add_row(tube, *(str(s.get(k, 0)) for k in keys))
    console.print(table)


@queue_app.command("buried")
def queue_buried(tube: Annotated[str | None, typer.Argument()] = None) -> None:
    """Buried (parked) jobs with the reason they were buried."""
    from shared.db import get_database

    sql = "SELECT tube, job_id, account_id, reason, buried_at FROM parked_jobs"
    params: tuple[str, ...] = ()
    if tube:
        sql += " WHERE tube = %s"
        params = (tube,)
    rows = get_database().fetch_all(sql + " ORDER BY buried_at DESC LIMIT 200", params)
    table = Table("tube", "job", "account", "buried at", "reason")
    for r in rows:
        table.add_row(
            r["tube"],
            str(r["job_id"]),
            str(r["account_id"] or "-"),
            str(r["buried_at"]),
            r["reason"],
        )
    console.print(table)


@queue_app.command("kick")
def queue_kick(
    tube: Annotated[str, typer.Argument(help="Tube whose buried jobs to replay.")],
    bound: Annotated[int, typer.Option(help="At most this many.")] = 1000,
) -> None:
    """Replay buried jobs of a tube (they go back to ready)."""
    from shared.db import get_database
    from shared.jobqueue import get_queue

    if tube not in JOB_TYPES:
        fail(f"unknown tube {tube!r} (known: {', '.join(JOB_TYPES)})", 2)
    kicked = get_queue().kick(tube, bound)
    get_database().execute(
        "DELETE FROM parked_jobs WHERE tube = %s ORDER BY buried_at LIMIT %s", (tube, kicked)
    )
    console.print(f"kicked {kicked} job(s) on {tube}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
