"""/auth referer: only a registrable amoCRM/Kommo account subdomain passes (issue 18 #8)."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.oauth_flow import allowed_host

pytestmark = pytest.mark.unit

ALLOWED = ("amocrm.ru", "amocrm.com", "kommo.com")


@pytest.mark.parametrize(
    "referer",
    [
        "amocrm.ru",  # the bare apex is no account
        "kommo.com",
        "acme.amocrm.ru.",  # trailing dot: another spelling of the same name
        "acme.kommo.com.",
        "xn--80ak6aa92e.amocrm.ru",  # punycode: a look-alike in the address bar
        "XN--80AK6AA92E.kommo.com",
        "ab--cd.amocrm.ru",  # IDNA-reserved "??--" label
        "a.b.amocrm.ru",  # deeper than an account subdomain
        "www.acme.kommo.com",
        " acme.amocrm.ru",
        "acme.amocrm.ru ",
        "acme.xn--amocrm-ru.ru",
    ],
)
def test_odd_referers_are_refused(referer: str) -> None:
    with pytest.raises(BadRequest) as info:
        allowed_host(referer, ALLOWED)
    assert info.value.code == "referer_not_allowed"


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("acme.amocrm.ru", "acme.amocrm.ru"),
        ("Shop-1.Kommo.com", "shop-1.kommo.com"),
        ("x.amocrm.com", "x.amocrm.com"),
    ],
)
def test_account_subdomains_pass(referer: str, host: str) -> None:
    assert allowed_host(referer, ALLOWED) == host
