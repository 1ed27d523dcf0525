"""The one retry policy: every vendor error class, and what each caller makes of it."""

from __future__ import annotations

import pymysql
import pytest

from shared import failures
from shared.amocrm import errors as amo
from shared.db import DatabaseUnavailable
from shared.failures import Failure, Scope
from shared.jobqueue import PoisonJob, QueueUnavailable, RetryBudget, RetryJob
from shared.unisender import errors as uni
from shared.web.error_mapping import map_exception

# (error, retriable, delay, scope, stops_account, pauses_reconciles, HTTP status, HTTP code)
CASES: list[tuple[Failure, bool, float | None, Scope, str | None, bool, int, str]] = [
    (amo.Transient("502", status=502), True, None, Scope.ACCOUNT, None, False, 503,
     "amocrm_unavailable"),
    (amo.OAuthTransient("429", retry_after=7), True, 7, Scope.ACCOUNT, None, False, 503,
     "amocrm_unavailable"),
    (amo.RateLimited("429", retry_after=12), True, 12, Scope.EGRESS, None, False, 503,
     "amocrm_unavailable"),
    (amo.RateLimited("429"), True, 30, Scope.EGRESS, None, False, 503, "amocrm_unavailable"),
    (amo.Unauthorized("401", status=401), False, None, Scope.ACCOUNT, "reauth_required", False,
     502, "amocrm_unauthorized"),
    (amo.OAuthRejected("400", hint="revoked", status=400), False, None, Scope.ACCOUNT,
     "reauth_required", False, 502, "amocrm_unauthorized"),
    (amo.Blocked("403", status=403), True, 60, Scope.EGRESS, None, False, 503, "amocrm_blocked"),
    (amo.Blocked("held", retry_after=4), True, 4, Scope.EGRESS, None, False, 503,
     "amocrm_blocked"),
    (amo.PaymentRequired("402", status=402), False, None, Scope.ACCOUNT, None, True, 502,
     "amocrm_error"),
    (amo.NotFound("404", status=404), False, None, Scope.ROW, None, False, 502, "amocrm_error"),
    (amo.BadRequest("400", status=400), False, None, Scope.ROW, None, False, 502, "amocrm_error"),
    (uni.Transient("HTTP 502"), True, None, Scope.ACCOUNT, None, False, 503,
     "unisender_unavailable"),
    (uni.RetryLater("later", code="retry_later"), True, None, Scope.ACCOUNT, None, False, 503,
     "unisender_unavailable"),
    (uni.KeyRateLimited("limit", code="api_call_limit_exceeded_for_api_key"), True, 60,
     Scope.ACCOUNT, None, False, 503, "unisender_unavailable"),
    (uni.IpRateLimited("limit", code="api_call_limit_exceeded_for_ip"), True, 60,
     Scope.EGRESS, None, False, 503, "unisender_unavailable"),
    (uni.InvalidApiKey("bad key", code="invalid_api_key"), False, None, Scope.ACCOUNT, None,
     False, 400, "unisender_invalid_api_key"),
    (uni.AccessDenied("denied", code="access_denied"), False, None, Scope.ACCOUNT, None, False,
     400, "unisender_access_denied"),
    (uni.NotEnoughMoney("money", code="not_enough_money"), False, None, Scope.ACCOUNT, None,
     False, 502, "unisender_error"),
    (uni.InvalidArgument("bad", code="invalid_arg"), False, None, Scope.ROW, None, False, 502,
     "unisender_error"),
    (uni.UnknownMethod("no", code="unknown_method"), False, None, Scope.ROW, None, False, 502,
     "unisender_error"),
    (uni.NotFound('Contact "x" not found'), False, None, Scope.ROW, None, False, 502,
     "unisender_error"),
    (uni.UnisenderError("other"), False, None, Scope.ROW, None, False, 502, "unisender_error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("exc", "retriable", "delay", "scope", "stops", "pauses", "status", "code"),
    CASES,
    ids=[type(c[0]).__name__ + "-" + str(i) for i, c in enumerate(CASES)],
)
def test_each_vendor_error_says_what_it_means(
    exc: Failure,
    retriable: bool,
    delay: float | None,
    scope: Scope,
    stops: str | None,
    pauses: bool,
    status: int,
    code: str,
) -> None:
    decision = failures.decide(exc)
    assert (decision.retriable, decision.delay, decision.scope) == (retriable, delay, scope)
    assert (decision.stops_account, decision.pauses_reconciles) == (stops, pauses)
    assert (decision.known and str(exc) in decision.reason) or "revoked" in decision.reason
    # The HTTP mapping and the queue ask the same question and get the same answer.
    assert map_exception(exc)[:2] == (status, code)
    outcome = failures.job_outcome(exc)
    if retriable:
        assert isinstance(outcome, RetryJob) and outcome.delay == delay
        # Waiting out a vendor's pause of the whole egress does not spend the job's budget.
        assert outcome.deferred is (scope is Scope.EGRESS)
    else:
        assert isinstance(outcome, PoisonJob) and outcome.reason == decision.reason


def test_every_class_of_both_trees_is_covered() -> None:
    """A new vendor error class gets its row above (and so a deliberate meaning)."""

    def subclasses(cls: type) -> set[type]:
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    covered = {type(case[0]) for case in CASES}
    tree = subclasses(amo.AmoCrmError) | subclasses(uni.UnisenderError)
    assert tree - covered == {amo.AmoCrmError, uni.RateLimited}


def test_amocrm_base_error_names_the_status_for_http() -> None:
    assert map_exception(amo.AmoCrmError("418", status=418)) == (
        502,
        "amocrm_error",
        "amoCRM refused the request (HTTP 418)",
    )


def test_infrastructure_and_data_errors() -> None:
    down = failures.decide(DatabaseUnavailable("gone"))
    assert down.retriable and down.http.status == 503
    assert failures.decide(QueueUnavailable("gone")).http.code == "queue_unavailable"
    data = failures.decide(pymysql.err.DataError(1264, "Out of range value for 'x' = 99999"))
    assert not data.retriable and data.scope is Scope.ROW
    assert "99999" not in data.reason  # MySQL's message may quote personal data
    bug = failures.decide(ZeroDivisionError("oops"))
    assert bug.retriable and not bug.known and bug.http.status == 500


def test_job_decisions_pass_through_with_their_scope() -> None:
    class Gone(PoisonJob):
        scope = Scope.ACCOUNT

    assert failures.decide(Gone("no account")).scope is Scope.ACCOUNT
    assert failures.decide(PoisonJob("bad")).scope is Scope.ROW
    retry = RetryJob("busy", delay=9)
    assert failures.job_outcome(retry) is retry
    assert failures.decide(retry).delay == 9


def test_the_retry_budget_is_one_rule_for_time_and_attempts() -> None:
    budget = RetryBudget(max_attempts=3, seconds=100, backoff_base=2, backoff_max=10)
    assert budget.delay(1, 30.0) == 30
    assert 1 <= budget.delay(5) <= 10
    assert budget.allows(attempts=50, age=70, delay=30, transient=True)
    assert not budget.allows(attempts=1, age=71, delay=30, transient=True)
    assert budget.allows(attempts=2, age=0, delay=1, transient=False)
    assert not budget.allows(attempts=3, age=0, delay=1, transient=False)
    assert budget.allows(attempts=99, age=10**6, delay=60, transient=True, deferred=True)
