"""How commands end: one `fail()` line, and infrastructure failures as an operator reads them."""

from __future__ import annotations

from typing import NoReturn

import pymysql
import requests
import typer
from rich.console import Console
from rich.markup import escape

from shared.db import DatabaseUnavailable, describe_mysql_error
from shared.jobqueue import QueueUnavailable

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, however long (soft_wrap); the message is text, never rich markup."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def describe_infrastructure_failure(exc: BaseException) -> str | None:
    """One line for MySQL, beanstalkd or a vendor being unreachable; None for anything else
    (a bug keeps its traceback)."""
    from shared.settings import get_settings

    if isinstance(exc, DatabaseUnavailable | pymysql.err.OperationalError):
        cause = exc.__cause__ if isinstance(exc.__cause__, pymysql.err.MySQLError) else exc
        return describe_mysql_error(cause, get_settings())
    if isinstance(exc, QueueUnavailable):
        settings = get_settings()
        return (
            f"beanstalkd at {settings.beanstalk_host}:{settings.beanstalk_port} is unreachable "
            f"({exc}); start it or set BEANSTALK_HOST/BEANSTALK_PORT"
        )
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        url = exc.request.url if exc.request is not None else "a vendor API"
        host = str(url).split("?", 1)[0]
        return f"{host} is unreachable ({type(exc).__name__}); check the URL settings and network"
    return None


def infrastructure_line(exc: BaseException) -> str:
    """describe_infrastructure_failure's line, or the exception's own text."""
    return describe_infrastructure_failure(exc) or str(exc)
