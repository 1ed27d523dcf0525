"""After everything above (and the e2e suite) ran against the stack: no secret in any log line.

Named to run last in this folder. Reads every log the stack wrote (functions, consumers,
scheduler, nginx's error log and its JSON access log); the emulators' own logs are left out,
since they stand for amoCRM and Unisender, who hold those credentials anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import Target

pytestmark = [pytest.mark.hostile, pytest.mark.e2e]


def _stack_logs(target: Target) -> list[Path]:
    workdir = target.stack.workdir
    logs = [p for p in workdir.glob("*.log") if not p.name.startswith("sandbox-")]
    logs += sorted((workdir / "nginx").glob("*.log"))
    return logs


def test_no_token_or_key_in_any_log_line(target: Target) -> None:
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
    access = (target.stack.workdir / "nginx" / "access.log").read_text(errors="replace")
    assert f"/webhook/{target.account_id}/***" in access
    assert target.secrets["webhook secret"] not in access
    # The e2e installs went through /auth?code=…&state=…: the log keeps the path only.
    assert '"path":"/auth"' in access
    assert "code=" not in access and "state=" not in access
