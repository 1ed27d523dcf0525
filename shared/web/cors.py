"""CORS for the amoCRM widget: answered for amoCRM account origins only."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import flask

from shared import errors
from shared.settings import get_settings
from shared.web.widget_token import HEADER as WIDGET_HEADER

_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def is_allowed_origin(origin: str | None, domains: tuple[str, ...]) -> bool:
    """True for https://<subdomain>.<allowed domain> (e.g. https://acme.amocrm.ru)."""
    if not origin:
        return False
    parts = urlsplit(origin)
    if parts.scheme != "https" or parts.port not in (None, 443) or parts.path not in ("", "/"):
        return False
    host = (parts.hostname or "").lower()
    for domain in domains:
        suffix = "." + domain
        if host.endswith(suffix) and _SUBDOMAIN.match(host[: -len(suffix)]):
            return True
    return False


def cors_headers(request: flask.Request) -> dict[str, str]:
    """CORS answer headers for an amoCRM account origin; empty for any other origin."""
    origin = request.headers.get("Origin")
    if origin is None or not is_allowed_origin(origin, get_settings().allowed_domains):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": f"{WIDGET_HEADER}, Content-Type, X-Requested-With",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def preflight(request: flask.Request) -> flask.Response:
    """Answer an OPTIONS preflight: 204 for amoCRM origins, 403 for anything else."""
    headers = cors_headers(request)
    if not headers:
        raise errors.Forbidden("origin not allowed", code="origin_not_allowed")
    response = flask.make_response("", 204)
    response.headers.update(headers)
    return response
