"""The one retry policy: what a failure means, and what every caller does about it.

The meaning lives on the errors. Every class of the amoCRM and Unisender trees derives from
`Failure` and declares, as class attributes, whether a retry can help (`retriable`), after how
long (`default_retry_after`, or the `retry_after` the answer carried), what it concerns (`scope`:
one row, one account, or every tenant behind our egress IP), what it does to the account
(`stops_account`, `pauses_reconciles`) and what an HTTP caller is told (`http`). `decide` reads
those attributes, and nothing else re-derives them: the consumers turn a `Decision` into a retry
or a bury (`job_outcome`), `shared.web.error_mapping` into a status code (`http_answer`),
`shared.accounts` into an account status. A retriable failure of the whole egress (a 429, a 403
block, Unisender's per-IP limit) defers the job: it waits without spending its retry budget
(`Decision.defers`);
how long and how often other jobs are retried is the one `shared.jobqueue.RetryBudget`. A new
retry rule goes here; a new vendor error goes into its vendor's `errors.py`, with its attributes.

Errors that are not a vendor's (the database or the queue down, a row MySQL refuses) get their
meaning from the small table `_OTHERS` below, because their classes are not ours to annotate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal, NamedTuple

import pymysql

from shared.crypto import DecryptionFailed
from shared.db import DatabaseUnavailable
from shared.jobqueue import PoisonJob, QueueUnavailable, RetryJob


class Scope(StrEnum):
    """Who a failure concerns, so callers know what else to stop or to try again."""

    ROW = "row"  # one row, event or request's data: the rest of a batch may still go through
    ACCOUNT = "account"  # one tenant (its tokens, key, plan): other tenants are not affected
    EGRESS = "egress"  # every tenant behind our egress IP, or the whole integration


# What a failure may do to the account's status (see shared.accounts.record_amocrm_failure).
# Only a refused authorization stops an account: a 403 block heals by itself (shared.blocks).
AccountStop = Literal["reauth_required"]


class HttpAnswer(NamedTuple):
    """What an HTTP caller is told: status, machine code, a message without secrets."""

    status: int
    code: str
    message: str


INTERNAL = HttpAnswer(500, "internal_error", "internal error")


class Failure(Exception):
    """Base of the vendor error trees; subclasses override the class attributes."""

    retriable: ClassVar[bool] = False
    scope: ClassVar[Scope] = Scope.ROW
    # Seconds to wait before a retry when the answer said nothing; None = the queue's backoff.
    default_retry_after: ClassVar[float | None] = None
    stops_account: ClassVar[AccountStop | None] = None
    pauses_reconciles: ClassVar[bool] = False
    # The start of the reason operators read on a retried or buried job, a failed run.
    summary: ClassVar[str] = "failed"
    http: ClassVar[HttpAnswer] = INTERNAL

    # Seconds the vendor asked us to wait (a 429's `retry_after`), set by the error's builder.
    retry_after: float | None = None

    @property
    def delay(self) -> float | None:
        """Seconds before a retry may help: what the vendor asked, else the class default."""
        return self.retry_after if self.retry_after is not None else self.default_retry_after

    def detail(self) -> str:
        """The error's own text, as it goes into reasons and account status lines."""
        return str(self)

    def http_answer(self) -> HttpAnswer:
        return self.http


@dataclass(frozen=True)
class Decision:
    """What to do about one failure; every caller reads the same fields."""

    retriable: bool
    delay: float | None  # None: the queue's own backoff
    scope: Scope
    reason: str
    stops_account: AccountStop | None = None
    pauses_reconciles: bool = False
    http: HttpAnswer = INTERNAL
    known: bool = True  # False for an exception nobody classified (a bug): log its traceback

    @property
    def defers(self) -> bool:
        """The egress must wait (a 429, a 403 block): the job waits without spending budget."""
        return self.retriable and self.scope is Scope.EGRESS


@dataclass(frozen=True)
class _Meaning:
    retriable: bool
    summary: str
    http: HttpAnswer = INTERNAL


# Errors of our own infrastructure and libraries, by class (the nearest base in the MRO wins).
_OTHERS: dict[type[BaseException], _Meaning] = {
    DatabaseUnavailable: _Meaning(
        True,
        "database unavailable",
        HttpAnswer(503, "database_unavailable", "the database is unavailable; retry later"),
    ),
    QueueUnavailable: _Meaning(
        True,
        "queue unavailable",
        HttpAnswer(503, "queue_unavailable", "the queue is unavailable; retry later"),
    ),
    # Our misconfiguration, not the caller's: ENCRYPTION_KEY lost the key that wrote the data.
    # Retried (an operator may restore the key) within the attempts an unexpected error gets.
    DecryptionFailed: _Meaning(
        True,
        "stored secret cannot be decrypted",
        HttpAnswer(
            500,
            "encryption_key_mismatch",
            "stored secret cannot be decrypted; check ENCRYPTION_KEY",
        ),
    ),
    # The data does not fit the schema (an id past BIGINT, ...): it never will.
    pymysql.err.DataError: _Meaning(False, "database refused the event's data"),
    pymysql.err.IntegrityError: _Meaning(False, "database refused the event's data"),
}


def decide(exc: BaseException) -> Decision:
    """The one answer to "what does this failure mean, and what now?"."""
    if isinstance(exc, Failure):
        return Decision(
            retriable=exc.retriable,
            delay=exc.delay if exc.retriable else None,
            scope=exc.scope,
            reason=f"{exc.summary}: {type(exc).__name__}: {exc.detail()}",
            stops_account=exc.stops_account,
            pauses_reconciles=exc.pauses_reconciles,
            http=exc.http_answer(),
        )
    if isinstance(exc, RetryJob | PoisonJob):
        # A handler already decided; a job-level class may say it concerns the whole account.
        scope = getattr(exc, "scope", Scope.ROW)
        delay = exc.delay if isinstance(exc, RetryJob) else None
        return Decision(isinstance(exc, RetryJob), delay, scope, exc.reason)
    for cls in type(exc).__mro__:
        meaning = _OTHERS.get(cls)
        if meaning is not None:
            # Only the class and the error number: MySQL's message may quote the value
            # (personal data).
            detail = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else exc
            return Decision(
                meaning.retriable,
                None,
                Scope.ROW,
                f"{meaning.summary}: {type(exc).__name__} {detail}",
                http=meaning.http,
            )
    return Decision(True, None, Scope.ROW, f"{type(exc).__name__}: {exc}", known=False)


def job_outcome(exc: BaseException) -> RetryJob | PoisonJob:
    """The queue's verdict: retry (after the failure's delay, or the backoff) or bury."""
    if isinstance(exc, RetryJob | PoisonJob):
        return exc
    decision = decide(exc)
    if decision.retriable:
        return RetryJob(decision.reason, delay=decision.delay, deferred=decision.defers)
    return PoisonJob(decision.reason)


def http_answer(exc: BaseException) -> HttpAnswer:
    """The HTTP status, code and message for a failure that reached an endpoint."""
    return decide(exc).http
