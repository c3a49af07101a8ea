"""HTTP clients for the twilio REST client that send to a configurable base URL.

The twilio library builds absolute URLs on ``https://<product>.twilio.com`` (or
``<product>.<edge>.<region>.twilio.com`` when an edge/region is set). These clients
replace scheme, host and port of every ``*.twilio.com`` URL by ``base_url`` (keeping
path and query; a path in ``base_url`` is prepended), so the unmodified
``twilio.rest.Client`` can talk to a regional proxy, an egress gateway, or a local fake
in tests::

    from twilio.rest import Client
    from ivr.twilio_http import BaseUrlHttpClient

    client = Client(sid, token, http_client=BaseUrlHttpClient("http://127.0.0.1:8999"))

``http_client_from_settings()`` picks the client from ``GRIDLINE_TWILIO_API_URL``: empty
means Twilio itself. Unlike the library default (no timeout at all), a request times out
after ``DEFAULT_TIMEOUT`` seconds unless told otherwise.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from requests.adapters import HTTPAdapter
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

from core.platform.settings import get_settings

DEFAULT_TIMEOUT = 15.0
TWILIO_DOMAIN = "twilio.com"


def normalise_base_url(base_url: str) -> str:
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Twilio API base URL must be absolute http(s): {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"Twilio API base URL must not carry a query: {base_url!r}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def rewrite_twilio_url(url: str, base_url: str) -> str:
    """``url`` with its Twilio host replaced by ``base_url``; other URLs unchanged."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host != TWILIO_DOMAIN and not host.endswith("." + TWILIO_DOMAIN):
        return url
    base = urlsplit(base_url)
    return urlunsplit(
        (base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, parts.fragment)
    )


class BaseUrlHttpClient(TwilioHttpClient):
    """A ``TwilioHttpClient`` whose requests go to ``base_url`` instead of *.twilio.com."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        pool_connections: bool = True,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            pool_connections=pool_connections, timeout=timeout, max_retries=max_retries, **kwargs
        )
        self.base_url = normalise_base_url(base_url)
        # The parent mounts its adapter (retries, pool size) on https:// only.
        if self.session is not None and self.base_url.startswith("http://"):
            adapter = self.session.get_adapter("https://")
            if isinstance(adapter, HTTPAdapter):
                self.session.mount("http://", adapter)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        # Only the URL changes; everything else reaches requests as the library sent it.
        return super().request(method, rewrite_twilio_url(url, self.base_url), *args, **kwargs)


class AsyncBaseUrlHttpClient(AsyncTwilioHttpClient):
    """The aiohttp-based twilio client, sending to ``base_url``; use ``*_async`` methods.

    Create it inside the running event loop (it opens an ``aiohttp.ClientSession``) and
    ``await client.close()`` when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = normalise_base_url(base_url)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        # The parent forwards ``timeout`` straight to aiohttp and ignores self.timeout.
        effective = self.timeout if timeout is None else timeout
        if auth is not None:
            # aiohttp deprecates its ``auth=BasicAuth(...)``; send the header ourselves.
            headers = dict(headers or {})
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return await super().request(
            method,
            rewrite_twilio_url(url, self.base_url),
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=effective,  # aiohttp turns a float into ClientTimeout(total=...)
            allow_redirects=allow_redirects,
        )


def http_client_from_settings(
    api_url: str | None = None, *, timeout: float | None = DEFAULT_TIMEOUT
) -> TwilioHttpClient:
    """The sync HTTP client for ``twilio.rest.Client``, honouring GRIDLINE_TWILIO_API_URL."""
    if api_url is None:
        api_url = get_settings().twilio_api_url
    if api_url:
        return BaseUrlHttpClient(api_url, timeout=timeout)
    return TwilioHttpClient(timeout=timeout)
