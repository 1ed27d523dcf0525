"""Every function answers its health check through the gateway."""

import pytest
import requests

from devstack.stack import FUNCTIONS, Stack

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_health_through_gateway(stack: Stack, function: str) -> None:
    response = requests.get(f"{stack.gateway_url}/{function}/healthz?deep=1", timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["function"] == function
    assert body["checks"] == {"mysql": "ok", "beanstalk": "ok"}
    assert response.headers["X-Request-Id"]


def test_request_id_from_caller_is_kept(stack: Stack) -> None:
    response = requests.get(
        f"{stack.gateway_url}/auth/healthz", headers={"X-Request-Id": "abc123"}, timeout=5
    )
    assert response.headers["X-Request-Id"] == "abc123"


def test_unknown_route_gets_json_404(stack: Stack) -> None:
    response = requests.get(f"{stack.gateway_url}/nope", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_oversized_body_gets_json_413(stack: Stack) -> None:
    response = requests.post(
        f"{stack.gateway_url}/webhook/1/x", data=b"a" * (3 * 1024 * 1024), timeout=10
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
