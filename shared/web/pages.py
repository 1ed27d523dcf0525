"""The HTML pages amosync serves (OAuth result pages, the status page) and their headers."""

from __future__ import annotations

import flask

# Pages that carry OAuth codes in their URL: no caching, no Referer leaking it onwards.
OAUTH_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}

# The operator's status page: never cached, never framed, inline styles and data: images only.
STATUS_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
    ),
}


def html_page(html: str, status: int, headers: dict[str, str]) -> flask.Response:
    """An HTML response with the page's security headers."""
    response = flask.make_response(html, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers.update(headers)
    return response
