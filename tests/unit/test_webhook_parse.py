"""The amoCRM webhook body parser: every entity and action, companies ignored, unescaping."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.amocrm import webhooks
from shared.amocrm.webhooks import (
    MAX_PAIRS,
    WebhookParseError,
    event_json_bound,
    parse_form,
    parse_id,
    parse_webhook,
    split_pairs,
)
from shared.jobs import ContactEvent, EmailValue
from shared.webhook_intake import split_events

pytestmark = pytest.mark.unit

ACCOUNT = [
    ("account[subdomain]", "acme"),
    ("account[id]", "29638927"),
    ("account[_links][self]", "https://acme.amocrm.ru"),
]


def entity(
    prefix: str,
    contact_id: int,
    *,
    name: str,
    emails: list[tuple[str, str]],
    kind: str = "contact",
    updated: int = 1717410000,
) -> list[tuple[str, str]]:
    pairs = [
        (f"{prefix}[id]", str(contact_id)),
        (f"{prefix}[name]", name),
        (f"{prefix}[custom_fields][0][id]", "264911"),
        (f"{prefix}[custom_fields][0][name]", "Телефон"),
        (f"{prefix}[custom_fields][0][code]", "PHONE"),
        (f"{prefix}[custom_fields][0][values][0][value]", "+79991234567"),
        (f"{prefix}[custom_fields][0][values][0][enum]", "521305"),
    ]
    if emails:
        pairs += [
            (f"{prefix}[custom_fields][1][id]", "264913"),
            (f"{prefix}[custom_fields][1][name]", "Почта"),
            (f"{prefix}[custom_fields][1][code]", "EMAIL"),
        ]
        for j, (value, enum) in enumerate(emails):
            pairs += [
                (f"{prefix}[custom_fields][1][values][{j}][value]", value),
                (f"{prefix}[custom_fields][1][values][{j}][enum]", enum),
            ]
    pairs += [(f"{prefix}[updated_at]", str(updated)), (f"{prefix}[type]", kind)]
    return pairs


def test_every_action_and_entity_of_one_post_is_read() -> None:
    pairs = list(ACCOUNT)
    for i in range(3):
        pairs += entity(
            f"contacts[add][{i}]", 100 + i, name=f"A{i}", emails=[(f"a{i}@x.ru", "521317")]
        )
    for i in range(2):
        pairs += entity(
            f"contacts[update][{i}]", 200 + i, name=f"U{i}", emails=[(f"u{i}@x.ru", "521317")]
        )
    pairs += [("contacts[delete][0][id]", "300"), ("contacts[delete][0][type]", "contact")]
    parsed = parse_webhook(urlencode(pairs))
    assert parsed.account_id == 29638927
    assert parsed.subdomain == "acme"
    assert [(e.action, e.contact_id) for e in parsed.events] == [
        ("add", 100),
        ("add", 101),
        ("add", 102),
        ("update", 200),
        ("update", 201),
        ("delete", 300),
    ]
    assert parsed.events[0].emails is not None
    assert parsed.events[0].emails[0].value == "a0@x.ru"
    assert parsed.events[0].emails[0].enum_id == 521317  # the account-specific id is kept
    assert parsed.events[-1].emails is None


def test_companies_under_contacts_are_ignored() -> None:
    pairs = [*ACCOUNT, *entity("contacts[add][0]", 1, name="Co", emails=[], kind="company")]
    pairs += entity("contacts[add][1]", 2, name="Person", emails=[("p@x.ru", "1")])
    parsed = parse_webhook(urlencode(pairs))
    assert [e.contact_id for e in parsed.events] == [2]
    assert parsed.ignored == 1


def test_html_entities_are_unescaped_and_email_matched_by_code_not_name() -> None:
    pairs = [
        *ACCOUNT,
        *entity(
            "contacts[update][0]",
            5,
            name="Tom &amp; Jerry &quot;Ltd&quot;",
            emails=[("  Tom&amp;Jerry@X.ru ", "7")],
        ),
    ]
    event = parse_webhook(urlencode(pairs)).events[0]
    assert event.name == 'Tom & Jerry "Ltd"'
    assert event.emails is not None and event.emails[0].value == "  Tom&Jerry@X.ru "


def test_update_without_email_field_means_no_email_now_restore_without_fields_is_unknown() -> None:
    pairs = [
        *ACCOUNT,
        ("contacts[update][0][id]", "9"),
        ("contacts[update][0][name]", "N"),
        ("contacts[update][0][type]", "contact"),
    ]
    pairs += [("contacts[restore][0][id]", "10"), ("contacts[restore][0][type]", "contact")]
    events = parse_webhook(urlencode(pairs)).events
    assert events[0].emails == []
    assert events[1].action == "restore" and events[1].emails is None


def test_indices_are_ordered_numerically_and_last_modified_is_a_fallback() -> None:
    pairs = [*ACCOUNT]
    for i in (10, 2, 1):
        pairs += [(f"contacts[add][{i}][id]", str(i)), (f"contacts[add][{i}][last_modified]", "77")]
    events = parse_webhook(urlencode(pairs)).events
    assert [e.contact_id for e in events] == [1, 2, 10]
    assert all(e.updated_at == 77 for e in events)


def test_legacy_enum_codes_are_kept_as_codes() -> None:
    pairs = [*ACCOUNT, *entity("contacts[add][0]", 1, name="L", emails=[("l@x.ru", "WORK")])]
    value = parse_webhook(urlencode(pairs)).events[0].emails[0]  # type: ignore[index]
    assert value.enum_id is None and value.enum_code == "WORK"


@pytest.mark.parametrize(
    "body",
    [
        "",
        "hello",
        '{"json": true}',
        "contacts[add][0][id]=1",  # no account block
        "account[subdomain]=acme&contacts[add][0][id]=1",  # no account id
        "account[id]=%C2%B2&contacts[add][0][id]=1",
        "account=1&contacts[add][0][id]=1",
        "account[id]=1",  # no contacts entities
        "account[id]=1&contacts=2",
        "account[id]=1&leads[add][0][id]=1",
        "account[id]=1&contacts[add][0][id]=1&contacts[add][0][id][x]=2",  # not a bracket form
        "account[id]=1&contacts[add][0[id]=1",
        b"account[id]=1&contacts[add][0][name]=\xff\xfe",
    ],
)
def test_bodies_that_are_not_an_amocrm_contacts_webhook_are_refused(body: str | bytes) -> None:
    with pytest.raises(WebhookParseError):
        parse_webhook(body)


def test_malformed_entities_are_skipped_and_the_rest_is_read() -> None:
    pairs = [*ACCOUNT, *entity("contacts[add][0]", 1, name="Good", emails=[("g@x.ru", "1")])]
    pairs += [
        ("contacts[add][1][id]", "abc"),
        ("contacts[add][2][id]", ""),
        ("contacts[add][3][id]", "7"),
        ("contacts[add][3][updated_at]", "yesterday"),
        ("contacts[add][4][id]", "8"),
        ("contacts[add][4][custom_fields]", "oops"),
        ("contacts[add][x][id]", "9"),
        ("contacts[add][5]", "not-an-entity"),
        ("contacts[update]", "1"),
        ("contacts[explode][0][id]", "1"),  # an action we do not handle: ignored
        ("contacts[note][0][id]", "2"),
        ("contacts[delete][0][id]", "3"),
    ]
    parsed = parse_webhook(urlencode(pairs))
    assert [(e.action, e.contact_id) for e in parsed.events] == [("add", 1), ("delete", 3)]
    assert parsed.ignored == 2
    reasons = {(s.action, s.index, s.contact_id) for s in parsed.skipped}
    assert reasons == {
        ("add", "1", None),
        ("add", "2", None),
        ("add", "3", 7),
        ("add", "4", 8),
        ("add", "x", None),
        ("add", "5", None),
        ("update", "", None),
    }
    # Reasons name the field, never its value (which may be personal data).
    assert all("yesterday" not in s.reason and "oops" not in s.reason for s in parsed.skipped)


def test_field_sizes_are_capped_so_one_event_always_fits_a_job() -> None:
    long_local = "x" * 250 + "@x.ru"
    emails = [(long_local, "1")] + [(f"e{i}@x.ru", "1") for i in range(200)]
    pairs = [*ACCOUNT, *entity("contacts[add][0]", 1, name="N" * 5000, emails=emails)]
    event = parse_webhook(urlencode(pairs)).events[0]
    assert len(event.name) == 255
    assert event.emails is not None and len(event.emails) == 50
    assert all(len(v.value) <= 254 for v in event.emails)
    assert len(event.model_dump_json()) < 24_000


def test_an_event_too_large_for_a_job_is_skipped_not_queued() -> None:
    # Control characters cost six bytes each in JSON: 50 such values would pass the caps.
    value = "\x01" * 240 + "@x.ru"
    pairs = [*ACCOUNT, *entity("contacts[add][0]", 1, name="N", emails=[(value, "1")] * 50)]
    parsed = parse_webhook(urlencode(pairs))
    assert parsed.events == []
    assert [s.contact_id for s in parsed.skipped] == [1]


def test_parse_form_builds_nested_groups_and_appends_empty_brackets() -> None:
    tree = parse_form("a[b][]=1&a[b][]=2&c=3")
    assert tree == {"a": {"b": {"0": "1", "1": "2"}}, "c": "3"}


def test_big_posts_split_into_jobs_under_the_size_limit() -> None:
    pairs = [*ACCOUNT]
    for i in range(2000):
        pairs += entity(
            f"contacts[update][{i}]", i + 1, name=f"Name {i}", emails=[(f"c{i}@x.ru", "1")]
        )
    events = parse_webhook(urlencode(pairs)).events
    groups = split_events(events, max_bytes=48_000)
    assert sum(len(g) for g in groups) == 2000
    assert len(groups) > 1
    assert all(sum(len(e.model_dump_json()) + 1 for e in g) <= 48_000 for g in groups)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        (" 42 ", 42),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),
        ("9" * 5000, None),
        ("²", None),
        ("١٢", None),
        ("-1", None),
        ("+1", None),
        ("1_000", None),
        ("", None),
    ],
)
def test_ids_are_bounded_ascii_digits(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected


# --- the fast form parser is held to the standard library's and to the former tree builder ----

_FORM_CHARS = st.one_of(
    st.sampled_from(["&", "=", "+", "%", "[", "]", "%5B", "%5D", "%5b", "%5d", "%20", "%2B"]),
    st.sampled_from(["%26", "%3D", "%25", "%zz", "%e2%82", "%E2%82%AC", "%C3", "%FF", "%0A"]),
    st.sampled_from(["%40", "%4", "%404", "@", "%2540"]),
    st.sampled_from(["a", "b", "0", "1", "contacts", "id", "", " ", "é", "€", "\n", "\x00"]),
    st.text(max_size=3),
)
_FORMS = st.lists(_FORM_CHARS, max_size=40).map("".join)


def _stdlib_pairs(text: str) -> list[tuple[str, str]] | str:
    try:
        return parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PAIRS
        )
    except ValueError as exc:
        return f"ValueError: {exc}"


def _fast_pairs(text: str) -> list[tuple[str, str]] | str:
    try:
        return split_pairs(text)
    except ValueError as exc:
        return f"ValueError: {exc}"


@settings(max_examples=3000, deadline=None)
@given(_FORMS)
def test_split_pairs_gives_what_parse_qsl_gives(text: str) -> None:
    assert _fast_pairs(text) == _stdlib_pairs(text)
    assert _fast_pairs(text) == _stdlib_pairs(text)  # again: now from the key cache


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=12))
def test_split_pairs_reads_back_what_urlencode_wrote(pairs: list[tuple[str, str]]) -> None:
    text = urlencode(pairs)
    assert split_pairs(text) == _stdlib_pairs(text)


def test_split_pairs_counts_fields_like_parse_qsl() -> None:
    text = "&".join(["a=1"] * (MAX_PAIRS + 1))
    assert _fast_pairs(text) == _stdlib_pairs(text) == "ValueError: Max number of fields exceeded"


def _reference_form(body: str) -> dict[str, object] | str:
    """The tree builder before the fast path: parse_qsl, then one regex match per key."""
    try:
        pairs = parse_qsl(
            body, keep_blank_values=True, strict_parsing=bool(body), max_num_fields=MAX_PAIRS
        )
    except ValueError as exc:
        return f"not a form-encoded body: {exc}"
    tree: dict[str, object] = {}
    for key, value in pairs:
        match = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if match is None:
            return f"malformed key {key[:80]!r}"
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = tree
        for depth, part in enumerate(path):
            if part == "":
                part = str(sum(1 for k in node if parse_id(k) is not None))
            if depth == len(path) - 1:
                if isinstance(node.get(part), dict):
                    return f"key {key[:80]!r} is both a value and a group"
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    return f"key {key[:80]!r} is both a value and a group"
                node = child
    return tree


def _fast_form(body: str) -> dict[str, object] | str:
    try:
        return parse_form(body)
    except WebhookParseError as exc:
        return str(exc)


_SEGMENTS = st.sampled_from(["", "0", "1", "2", "a", "b", "x y", "[", "]", "%5B", "é"])
_KEYS = st.builds(
    lambda head, segs: head + "".join(f"[{s}]" for s in segs),
    st.sampled_from(["a", "b", "contacts", "", "c]d", "e[f"]),
    st.lists(_SEGMENTS, max_size=4),
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(_KEYS, st.sampled_from(["1", "", "v", "a+b", "%40"])), max_size=10))
def test_parse_form_builds_the_tree_the_former_builder_built(pairs: list[tuple[str, str]]) -> None:
    body = "&".join(f"{quote(k, safe='[]')}={v}" for k, v in pairs)
    assert _fast_form(body) == _reference_form(body)
    assert _fast_form(body) == _reference_form(body)  # again: now from the key caches


def test_the_key_caches_stay_bounded() -> None:
    for i in range(3 * webhooks._KEY_CACHE_SIZE):
        parse_form(f"k{i}[x]=1&{'y' * 200}{i}=2")
    assert len(webhooks._KEYS) <= webhooks._KEY_CACHE_SIZE
    assert len(webhooks._PATHS) <= webhooks._KEY_CACHE_SIZE
    assert not any(len(k) > webhooks._KEY_CACHE_LENGTH for k in webhooks._KEYS)


_EVENT_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=500, deadline=None)
@given(
    st.builds(
        ContactEvent,
        action=st.sampled_from(["add", "update", "delete", "restore"]),
        contact_id=st.integers(min_value=1, max_value=2**63 - 1),
        name=_EVENT_TEXT,
        updated_at=st.integers(min_value=0, max_value=2**63 - 1),
        emails=st.one_of(
            st.none(),
            st.lists(
                st.builds(
                    EmailValue,
                    value=_EVENT_TEXT,
                    enum_id=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
                    enum_code=st.one_of(st.none(), st.text(max_size=32)),
                ),
                max_size=4,
            ),
        ),
    )
)
def test_event_json_bound_is_never_below_the_json(event: ContactEvent) -> None:
    assert len(event.model_dump_json()) <= event_json_bound(event)


def test_split_events_measures_exactly_when_the_bound_says_it_may_not_fit() -> None:
    events = [
        ContactEvent(action="update", contact_id=i + 1, name="\x01" * 200, emails=[])
        for i in range(60)
    ]
    groups = split_events(events, max_bytes=48_000)
    assert [e for g in groups for e in g] == events
    assert len(groups) > 1
    assert all(sum(len(e.model_dump_json()) + 1 for e in g) <= 48_000 for g in groups)
    assert split_events(events[:3]) == [events[:3]]
    assert split_events([]) == []
