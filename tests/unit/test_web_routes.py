"""The route table's strict path matching, the JSON depth scan and the request-id rule."""

from __future__ import annotations

import flask
import pytest

from shared.web.request import json_depth, request_id_of
from shared.web.routes import Route

pytestmark = pytest.mark.unit

WEBHOOK = Route("/webhook/{account_id:id}/{secret:secret}", lambda call: None, methods=("POST",))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/webhook/123/abc_DEF-9", {"account_id": "123", "secret": "abc_DEF-9"}),
        ("/webhook/0123/s", {"account_id": "0123", "secret": "s"}),
        ("/webhook/9223372036854775807/s", {"account_id": "9223372036854775807", "secret": "s"}),
        ("/webhook/9223372036854775808/s", None),  # past BIGINT
        ("/webhook/ 123/s", None),
        ("/webhook/+123/s", None),
        ("/webhook/-1/s", None),
        ("/webhook/\t1/s", None),
        ("/webhook/\uff11\uff12/s", None),  # fullwidth digits: digits to Python's \\d, not ours
        ("/webhook/1/s/extra", None),
        ("/webhook/1/s%2F", None),
        ("/webhook/1/" + "s" * 201, None),
        ("/webhook/1", None),
        ("/webhooks/1/s", None),
    ],
)
def test_webhook_paths_match_strictly(path: str, params: dict[str, str] | None) -> None:
    assert WEBHOOK.match(path) == params


def test_literal_paths_match_only_themselves() -> None:
    route = Route("/sync/status", lambda call: None)
    assert route.match("/sync/status") == {}
    assert route.match("/sync/statusx") is None
    assert route.match("/sync") is None


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": 2}]}', 3),
        ('{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
        ('{"a": "\\"[[["}', 1),  # nor after an escaped quote
        ("[" * 5000, 5000),
        ("1", 0),
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123_X.y:z", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("has space", False),
        ("<script>", False),
        ("caf\u00e9", False),
    ],
)
def test_request_ids(given: str, kept: bool) -> None:
    app = flask.Flask(__name__)
    with app.test_request_context("/", headers={"X-Request-Id": given} if given else {}):
        rid = request_id_of(flask.request)
    assert (rid == given) is kept
    assert 0 < len(rid) <= 128
