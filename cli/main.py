"""`amosync`: the operator CLI (the original's console commands, modernised)."""

from __future__ import annotations

import sys

import typer

from cli import accounts, capacity, config, demo, lists, ops, security, sync, widget

app = typer.Typer(
    name="amosync",
    help="amosync operator commands. Every command has --help; exit code 0 = ok, 1 = failed "
    "(including MySQL, beanstalkd or a vendor unreachable: one line on stderr, no traceback), "
    "2 = usage error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _use_a_running_dev_stack(ctx: typer.Context) -> None:
    """Started next to a running `amosync dev`, every command uses its settings (emulators, ports)
    for whatever the environment does not set itself (devstack/run.py: DEV_STATE_FILE)."""
    import os

    from devstack.run import apply_dev_stack_state

    if ctx.invoked_subcommand != "dev":
        apply_dev_stack_state(os.environ)


ops.register(app)
config.register(app)
accounts.register(app)
lists.register(app)
sync.register(app)
widget.register(app)
security.register(app)
demo.register(app)
capacity.register(app)


def main() -> None:
    """The console script: infrastructure failures become one line and exit code 1."""
    from cli.exits import describe_infrastructure_failure

    try:
        app()
    except Exception as exc:
        line = describe_infrastructure_failure(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
