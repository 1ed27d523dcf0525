"""Hostile webhook bodies and URLs: refused with a JSON 4xx, never a 5xx, nothing queued."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import INJECTIONS, Target, check_response

pytestmark = [pytest.mark.hostile, pytest.mark.e2e]

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every character but lone surrogates, non-ASCII digits included ("²".isdigit() is True, int()
# of it raises): see test_unreadable_ids_skip_their_entity.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
values = st.one_of(
    text,
    st.sampled_from(INJECTIONS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "-1", "contact", "company", "lead", "[]", "{}", "null"]),
)
segments = st.one_of(
    st.sampled_from(["add", "update", "delete", "restore", "custom_fields", "values", "0", "1"]),
    st.sampled_from(["id", "name", "type", "code", "value", "enum", "updated_at", "account_id"]),
    st.integers(min_value=-5, max_value=10**12).map(str),
    text,
    st.just(""),
)
keys = st.one_of(
    st.builds(
        lambda head, parts: head + "".join(f"[{p}]" for p in parts),
        st.sampled_from(["contacts", "account", "leads", "x"]),
        st.lists(segments, max_size=8),
    ),
    text,
    st.sampled_from(["contacts", "contacts[]", "contacts[update", "account]id[", "[]", "=", "&"]),
)


def _post(target: Target, body: bytes | str, headers: dict[str, str]) -> requests.Response:
    return requests.post(target.webhook_url, data=body, headers=headers, timeout=15)


def snapshot_queue(target: Target) -> int:
    from shared.jobqueue import get_queue

    return int(get_queue().tube_stats("contact-events")["total-jobs"])


@SETTINGS
@given(pairs=st.lists(st.tuples(keys, values), max_size=40), own_account=st.booleans())
def test_random_forms(target: Target, pairs: list[tuple[str, str]], own_account: bool) -> None:
    if own_account:
        pairs = [("account[id]", str(target.account_id)), *pairs]
    before = snapshot_queue(target)
    resp = _post(target, urlencode(pairs), FORM)
    check_response(target, resp, where=f"POST webhook {pairs[:3]!r}")
    if resp.status_code >= 400:
        assert snapshot_queue(target) == before, "a refused webhook queued something"
    else:
        assert resp.json()["status"] == "queued"
        assert snapshot_queue(target) >= before + (1 if resp.json()["events"] else 0)


@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=4000),
        st.recursive(
            st.none() | st.booleans() | st.integers() | text,
            lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
            max_leaves=30,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded; charset=latin-1",
        ]
    ),
)
def test_random_bytes_and_json(target: Target, body: bytes, content_type: str) -> None:
    before = snapshot_queue(target)
    resp = _post(target, body, {"Content-Type": content_type})
    check_response(target, resp, where=f"POST webhook {body[:80]!r} as {content_type}")
    if resp.status_code >= 400:
        assert snapshot_queue(target) == before


@SETTINGS
@given(
    account=st.one_of(
        st.integers(min_value=-10, max_value=2**80).map(str), text, st.sampled_from(INJECTIONS)
    ),
    secret=st.one_of(text, st.sampled_from(INJECTIONS), st.just("")),
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
)
def test_unknown_destinations_look_the_same(
    target: Target, account: str, secret: str, method: str
) -> None:
    from urllib.parse import quote

    url = f"{target.url}/webhook/{quote(account, safe='')}/{quote(secret, safe='')}"
    before = snapshot_queue(target)
    resp = requests.request(
        method,
        url,
        data=f"account[id]={target.account_id}&contacts[delete][0][id]=1",
        headers=FORM,
        timeout=15,
    )
    # nginx refuses an encoded NUL, dot-segments climbing above the root, or a request line
    # over its 8 KiB buffer itself.
    nul = "\x00" in account + secret or ".." in account + secret or len(url) > 8000
    check_response(target, resp, where=f"{method} {url[:200]}", unparsable_uri=nul)
    assert resp.status_code in ((400, 404, 405, 414) if nul else (404, 405)), resp.text
    assert snapshot_queue(target) == before


def test_wrong_secret_of_a_real_account_is_the_same_404(target: Target) -> None:
    wrong = target.webhook_url.rsplit("/", 1)[0] + "/not-the-secret"
    resp = _post(target, f"account[id]={target.account_id}", FORM)
    assert resp.status_code in (200, 400), resp.text
    wrong_resp = requests.post(wrong, data="account[id]=1", headers=FORM, timeout=15)
    unknown = requests.post(
        f"{target.url}/webhook/999999999/whatever", data="a=1", headers=FORM, timeout=15
    )
    assert wrong_resp.status_code == unknown.status_code == 404
    assert wrong_resp.json() == unknown.json()


def test_foreign_account_in_the_body_is_refused(target: Target) -> None:
    before = snapshot_queue(target)
    body = urlencode(
        [
            ("account[id]", str(target.account_id + 1)),
            ("contacts[update][0][id]", "5"),
            ("contacts[update][0][name]", "Mallory"),
        ]
    )
    resp = _post(target, body, FORM)
    check_response(target, resp, where="foreign account body")
    assert resp.status_code == 400
    assert snapshot_queue(target) == before


@pytest.mark.parametrize(
    "body",
    [
        # Deeply nested and very wide forms: parsers that recurse or allocate per pair.
        "contacts" + "[a]" * 2000 + "=1",
        "&".join(f"contacts[update][{i}][id]={i}" for i in range(20000)),
        "contacts[update][0][id]=" + "9" * 300,
        "contacts[update][99999999999999999999][id]=1",
        "%" * 10000,
        "=&" * 20000,
    ],
    ids=["deep", "wide", "long-int", "huge-index", "bad-escapes", "empty-pairs"],
)
def test_pathological_forms(target: Target, body: str) -> None:
    before = snapshot_queue(target)
    resp = _post(target, f"account[id]={target.account_id}&" + body, FORM)
    check_response(target, resp, where=f"pathological form {body[:40]!r}")
    if resp.status_code >= 400:
        assert snapshot_queue(target) == before


def test_a_body_over_the_gateway_limit_is_413_json(target: Target) -> None:
    resp = _post(target, b"a=" + b"b" * (2 * 1024 * 1024 + 10), FORM)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_a_real_sized_webhook_over_nginx_default_buffer_is_accepted(target: Target) -> None:
    """Bodies over nginx's 8 KiB default buffer used to fail with a bare 500 in the local stack."""
    pairs = [("account[id]", str(target.account_id))]
    for i in range(40):
        prefix = f"contacts[update][{i}]"
        pairs += [
            (f"{prefix}[id]", str(900000 + i)),
            (f"{prefix}[name]", f"Big body {i} " + "x" * 300),
            (f"{prefix}[updated_at]", "1700000000"),
            (f"{prefix}[type]", "contact"),
        ]
    body = urlencode(pairs)
    assert len(body) > 16 * 1024
    resp = _post(target, body, FORM)
    check_response(target, resp, where="a 40-contact webhook")
    assert resp.status_code == 200, resp.text
    assert resp.json()["events"] == 40


# Ids, indexes and enum ids are read with parse_id (ASCII digits, at most 2^63-1): "²" or 5000
# digits once made int() raise a 500. An entity whose id or index cannot be read is skipped (the
# rest of the POST is queued); an unreadable enum keeps the address, its type unknown.
@pytest.mark.parametrize(
    ("body", "skipped", "events"),
    [
        ("contacts[update][0][id]=" + "9" * 5000, 1, 0),
        ("contacts[update][0][id]=%C2%B2", 1, 0),
        ("contacts[update][" + "9" * 5000 + "][id]=5", 1, 0),
        ("contacts[update][%C2%B2][id]=5", 1, 0),
        (
            "contacts[update][0][id]=5&contacts[update][0][custom_fields][0][code]=EMAIL"
            "&contacts[update][0][custom_fields][0][values][0][value]=a@b.example"
            "&contacts[update][0][custom_fields][0][values][0][enum]=%C2%B2",
            0,
            1,
        ),
    ],
    ids=["id-5000-digits", "id-superscript", "index-5000-digits", "index-superscript", "enum"],
)
def test_unreadable_ids_skip_their_entity(
    target: Target, body: str, skipped: int, events: int
) -> None:
    before = snapshot_queue(target)
    resp = _post(target, f"account[id]={target.account_id}&" + body, FORM)
    check_response(target, resp, where=f"webhook {body[:50]!r}")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert (answer["status"], answer["skipped"], answer["events"]) == ("queued", skipped, events)
    assert snapshot_queue(target) == before + events
