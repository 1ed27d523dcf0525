"""amoCRM OAuth 2.0: authorization-code exchange and refresh-token rotation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests
from pydantic import SecretStr

from shared.amocrm.client import USER_AGENT
from shared.amocrm.errors import OAuthTransient, raise_for_oauth_response
from shared.amocrm.models import TokenPair
from shared.clock import aware_utcnow

logger = logging.getLogger(__name__)

Timeout = float | tuple[float, float]


class AmoCrmOAuth:
    """Talks to `https://{account host}/oauth2/access_token` (or `api_url_override`)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str | SecretStr,
        redirect_uri: str,
        *,
        api_url_override: str | None = None,
        session: requests.Session | None = None,
        timeout: Timeout = (5, 20),
        now: Callable[[], datetime] = aware_utcnow,
    ) -> None:
        self.client_id = client_id
        self._client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.redirect_uri = redirect_uri
        self.api_url_override = api_url_override.rstrip("/") if api_url_override else None
        self._session = session or requests.Session()
        self._timeout = timeout
        self._now = now

    def __repr__(self) -> str:
        return f"AmoCrmOAuth(client_id={self.client_id!r}, redirect_uri={self.redirect_uri!r})"

    def token_url(self, host: str) -> str:
        """Token endpoint of the account host (`acme.amocrm.ru`), unless overridden."""
        if self.api_url_override:
            return f"{self.api_url_override}/oauth2/access_token"
        bare = host.removeprefix("https://").removeprefix("http://").strip("/")
        return f"https://{bare}/oauth2/access_token"

    def exchange_code(self, host: str, code: str) -> TokenPair:
        """Trade a single-use authorization code (valid 20 min) for a token pair."""
        return self._grant(
            host, {"grant_type": "authorization_code", "code": code}, what="code exchange"
        )

    def refresh(self, host: str, refresh_token: str | SecretStr) -> TokenPair:
        """Rotate the pair; persist the result at once, the old refresh token dies on first use."""
        raw = (
            refresh_token.get_secret_value()
            if isinstance(refresh_token, SecretStr)
            else refresh_token
        )
        return self._grant(
            host, {"grant_type": "refresh_token", "refresh_token": raw}, what="refresh"
        )

    def _grant(self, host: str, grant: dict[str, str], *, what: str) -> TokenPair:
        # JSON like the Kommo reference example (the PHP library's form body works too).
        payload: dict[str, Any] = {
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "redirect_uri": self.redirect_uri,
            **grant,
        }
        url = self.token_url(host)
        # No retries here: a refresh must stay single-flight per account, so the caller holding
        # that lock decides whether to retry (safe: the old token works until the new is used).
        try:
            resp = self._session.post(
                url,
                json=payload,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=self._timeout,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise OAuthTransient(f"amoCRM token endpoint unreachable ({what}): {exc}") from exc
        logger.info(
            "amocrm oauth %s -> %s request_id=%s",
            what,
            resp.status_code,
            resp.headers.get("X-Request-Id"),
        )
        raise_for_oauth_response(resp)
        try:
            body = resp.json()
            return TokenPair.from_token_response(body, now=self._now())
        except (ValueError, KeyError, TypeError) as exc:
            # A 200 we cannot read is most likely a proxy page; the grant may still be unused.
            raise OAuthTransient(f"unreadable token response ({what})", status=200) from exc
