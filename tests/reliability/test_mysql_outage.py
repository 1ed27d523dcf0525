"""MySQL goes away under a running stack: functions answer 503 (amoCRM retries) and recover.

The shared MariaDB server is never stopped (other suites use it): this stack reaches MySQL
through a TCP proxy of the test's own, which the test cuts and restores.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.stack import FUNCTIONS, Ports, Stack
from shared.jobqueue import Queue
from shared.jobs import ContactEventsJob
from shared.webhook_intake import ensure_webhook_secret
from testing.widget import mint_widget_token, wait_for
from tests.conftest import MYSQL_HOST, MYSQL_PORT, Beanstalkd
from tests.reliability.support import TcpProxy

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

BODY = (
    "account[subdomain]=outage&account[id]={id}"
    "&contacts[update][0][id]=501&contacts[update][0][name]=Ann"
    "&contacts[update][0][custom_fields][0][id]=1&contacts[update][0][custom_fields][0][code]=EMAIL"
    "&contacts[update][0][custom_fields][0][values][0][value]=ann@example.com"
    "&contacts[update][0][updated_at]=1700000000&contacts[update][0][type]=contact"
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class OutageStack:
    def __init__(self, stack: Stack, proxy: TcpProxy, env: dict[str, str]) -> None:
        self.stack, self.proxy, self.env = stack, proxy, env
        self.url = stack.gateway_url
        self.queue = Queue(
            "127.0.0.1", stack.ports.beanstalk, tube_prefix=env["BEANSTALK_TUBE_PREFIX"]
        )


@pytest.fixture(scope="module")
def outage(
    base_env: dict[str, str],
    mysql_database: str,
    session_tmp: Path,
    beanstalkd_server: Beanstalkd,
    ports: Ports,
) -> Iterator[OutageStack]:
    if beanstalkd_server.proc is None or beanstalkd_server.proc.poll() is not None:
        beanstalkd_server.start()
    proxy = TcpProxy(MYSQL_HOST, MYSQL_PORT)
    proxy.start()
    own = Ports.free()
    own.beanstalk = ports.beanstalk
    gateway = f"http://127.0.0.1:{own.gateway}"
    env = {
        **base_env,
        "MYSQL_HOST": "127.0.0.1",
        "MYSQL_PORT": str(proxy.port),
        # Fail fast while cut; a hung connect would only make the 503 slower.
        "MYSQL_CONNECT_TIMEOUT": "2",
        "BEANSTALK_TUBE_PREFIX": f"outage{uuid.uuid4().hex[:8]}-",
        "PUBLIC_URL": gateway,
        "AMOCRM_REDIRECT_URI": f"{gateway}/auth",
    }
    stack = Stack(
        ports=own,
        env=env,
        workdir=session_tmp / "outage-stack",
        with_sandbox=False,
        with_scheduler=False,
        workers=(),
        external_beanstalkd=True,
    )
    try:
        stack.start()
        yield OutageStack(stack, proxy, env)
    finally:
        stack.stop()
        proxy.close()


def _account(db) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    account_id = random.randint(10**9, 2 * 10**9)
    db.execute(
        "INSERT INTO accounts (id, name, host) VALUES (%s, %s, %s)",
        (account_id, f"outage{account_id}", f"outage{account_id}.amocrm.ru"),
    )
    return account_id, ensure_webhook_secret(db, account_id)


def _post_hook(o: OutageStack, account_id: int, secret: str) -> requests.Response:
    return requests.post(
        f"{o.url}/webhook/{account_id}/{secret}",
        data=BODY.format(id=account_id),
        headers=FORM,
        timeout=15,
    )


def _requests(o: OutageStack, account_id: int) -> dict[str, Any]:
    """One call per route that needs MySQL, as its real callers make it."""
    admin = {"Authorization": f"Bearer {o.env['ADMIN_TOKEN']}"}
    widget = {"X-Auth-Token": mint_widget_token(o.env, account_id)}
    name = f"outage{account_id}"
    return {
        "auth": lambda: requests.get(
            f"{o.url}/auth", params={"name": "x"}, timeout=15, allow_redirects=False
        ),
        "widget": lambda: requests.get(f"{o.url}/widget/status", headers=widget, timeout=15),
        "contacts": lambda: requests.get(
            f"{o.url}/contacts", params={"name": name}, headers=admin, timeout=15
        ),
        "sync": lambda: requests.get(
            f"{o.url}/sync/status", params={"name": name}, headers=admin, timeout=15
        ),
        "status": lambda: requests.get(f"{o.url}/status", headers=admin, timeout=15),
    }


def _jobs(o: OutageStack) -> int:
    return int(o.queue.tube_stats(ContactEventsJob.tube)["current-jobs-ready"])


def test_functions_answer_503_while_mysql_is_down_and_recover(outage: OutageStack, db) -> None:  # type: ignore[no-untyped-def]
    warm_id, warm_secret = _account(db)
    cold_id, cold_secret = _account(db)
    # Every thread of every function holds a live connection before the cut.
    assert _post_hook(outage, warm_id, warm_secret).status_code == 200
    for name in FUNCTIONS:
        r = requests.get(f"{outage.url}/{name}/healthz?deep=1", timeout=5)
        assert r.status_code == 200, r.text
    queued = _jobs(outage)

    outage.proxy.cut()
    try:
        for name in FUNCTIONS:
            r = requests.get(f"{outage.url}/{name}/healthz?deep=1", timeout=15)
            assert r.status_code == 503, (name, r.text)
            assert r.json()["checks"]["mysql"].startswith("down")
        # An account whose secret this process has not seen: it cannot be checked, so amoCRM
        # is told to retry, and nothing is queued.
        r = _post_hook(outage, cold_id, cold_secret)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        # A recently checked secret may be trusted from memory: then the event is queued
        # durably (beanstalkd is up) and 200 is honest. Either way, never a 200 without a job.
        r = _post_hook(outage, warm_id, warm_secret)
        assert r.status_code in (200, 503), r.text
        expected = queued + (1 if r.status_code == 200 else 0)
        assert _jobs(outage) == expected
        for route, call in _requests(outage, warm_id).items():
            r = call()
            assert r.status_code == 503, (route, r.status_code, r.text[:300])
            assert r.json()["error"]["code"] in ("database_unavailable", "service_unavailable")
    finally:
        outage.proxy.restore()

    def healthy() -> bool:
        return all(
            requests.get(f"{outage.url}/{n}/healthz?deep=1", timeout=5).status_code == 200
            for n in FUNCTIONS
        )

    wait_for(healthy, timeout=30, what="every function healthy again")
    r = _post_hook(outage, cold_id, cold_secret)
    assert r.status_code == 200, r.text
    assert _jobs(outage) == expected + 1
    calls = _requests(outage, warm_id)
    assert calls["auth"]().status_code == 302
    assert calls["widget"]().status_code == 200
    assert calls["status"]().status_code == 200
    # No sync run yet for this account: 404 is its normal answer.
    assert calls["sync"]().status_code in (200, 404)
