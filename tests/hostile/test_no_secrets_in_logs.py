"""No secret in any log line of the stack, whatever ran before.

Each test first sends its own secret-bearing traffic (the installs and the Unisender connect of
the `target` fixture, then webhooks with the right and a wrong secret, admin calls, an OAuth
redirect with a code and state), so it does not depend on running after other tests. It then
reads every log the stack wrote (functions, consumers, scheduler, nginx's error log and its
JSON access log); the emulators' own logs are left out, since they stand for amoCRM and
Unisender, who hold those credentials anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.hostile.conftest import Target

pytestmark = [pytest.mark.hostile, pytest.mark.e2e]


def _send_secret_bearing_requests(target: Target) -> None:
    """Traffic whose URLs or headers carry secrets, answered whatever the order of the tests."""
    body = {
        "account[id]": str(target.account_id),
        "account[subdomain]": "hostile",
        "contacts[delete][0][id]": "1",
        "contacts[delete][0][type]": "contact",
    }
    assert requests.post(target.webhook_url, data=body, timeout=10).status_code == 200
    wrong = target.webhook_url.rsplit("/", 1)[0] + "/" + "x" * 43
    assert requests.post(wrong, data=body, timeout=10).status_code in (401, 403, 404)
    assert requests.get(f"{target.url}/status", headers=target.admin(), timeout=10).ok
    oauth = requests.get(
        f"{target.url}/auth",
        params={"code": "def50200" + "c" * 40, "state": "s" * 32, "referer": "x.amocrm.ru"},
        timeout=10,
    )
    assert oauth.status_code < 500


def _stack_logs(target: Target) -> list[Path]:
    workdir = target.stack.workdir
    logs = [p for p in workdir.glob("*.log") if not p.name.startswith("sandbox-")]
    logs += sorted((workdir / "nginx").glob("*.log"))
    return logs


def test_no_token_or_key_in_any_log_line(target: Target) -> None:
    _send_secret_bearing_requests(target)
    logs = _stack_logs(target)
    names = {p.name for p in logs}
    assert {"function-webhook.log", "function-widget.log", "access.log"} <= names, names
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        for name, value in target.secrets.items():
            if value and len(value) >= 8 and value in text:
                line = next(ln for ln in text.splitlines() if value in ln)
                leaks.append(f"{name} in {path.name}: {line.replace(value, '<SECRET>')[:300]}")
    assert not leaks, "\n".join(leaks)


def test_the_access_log_masks_webhook_secrets_and_drops_query_strings(target: Target) -> None:
    _send_secret_bearing_requests(target)
    access = (target.stack.workdir / "nginx" / "access.log").read_text(errors="replace")
    assert f"/webhook/{target.account_id}/***" in access
    assert target.secrets["webhook secret"] not in access
    # /auth?code=…&state=… (the fixture's install and ours): the log keeps the path only.
    assert '"path":"/auth"' in access
    assert "code=" not in access and "state=" not in access
