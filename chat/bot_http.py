"""The bot's HTTP client for Bot API calls: aiohttp instead of PTB's default (httpx).

Profiled under a chat burst (no Telegram limits), httpx's connection pool took about a third
of the process's CPU: with 64 connections open it looks over every one of them, asking each
socket whether it is still readable, on every request. aiohttp (already the server's
library) hands out a pooled connection without that, so the same calls cost a fraction.

What PTB expects of a request (``telegram.request.BaseRequest.do_request``) is kept: the
parameters go form-encoded as PTB prepares them (JSON in the values), files as multipart;
a timeout becomes ``telegram.error.TimedOut`` and any other transport failure
``NetworkError`` (both retryable for the dialog, ``chat.common.retryable``); the status and
body are returned as they came, PTB reads Telegram's errors from them. Unlike httpx, it logs
no line per call: only a call Telegram refused or failed (INFO, the token masked by
``chat.redact``).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

log = logging.getLogger(__name__)

# PTB's own defaults for its httpx client, kept so that behaviour under a slow Bot API does not change.
CONNECT_S, READ_S, POOL_S, MEDIA_WRITE_S = 5.0, 5.0, 1.0, 20.0
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


class AiohttpRequest(BaseRequest):
    def __init__(self, connections: int = 64, *, read_timeout: float | None = READ_S):
        self.connections = connections
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            # No cookies (the Bot API sets none) and no environment proxies read per request.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, limit_per_host=self.connections),
                cookie_jar=aiohttp.DummyCookieJar(), headers={"User-Agent": self.USER_AGENT})

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout=BaseRequest.DEFAULT_NONE, write_timeout=BaseRequest.DEFAULT_NONE,  # noqa: ANN001
                         connect_timeout=BaseRequest.DEFAULT_NONE,  # noqa: ANN001
                         pool_timeout=BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:  # noqa: ANN001
        if self._session is None or self._session.closed:
            raise RuntimeError("the bot's HTTP client is not initialized")
        files = request_data.multipart_data if request_data is not None and request_data.contains_files else None
        read = self._read_timeout if isinstance(read_timeout, DefaultValue) else read_timeout
        connect = CONNECT_S if isinstance(connect_timeout, DefaultValue) else connect_timeout
        pool = POOL_S if isinstance(pool_timeout, DefaultValue) else pool_timeout
        write = (MEDIA_WRITE_S if files else None) if isinstance(write_timeout, DefaultValue) else write_timeout
        # aiohttp has no write timeout of its own: an upload's bounds its whole request.
        timeout = aiohttp.ClientTimeout(total=(write + (read or 0)) if write and files else None,
                                        connect=None if pool is None or connect is None else pool + connect,
                                        sock_connect=connect, sock_read=read)
        data: aiohttp.FormData | bytes | None = None
        headers = None
        if request_data is not None:
            if files:
                data = aiohttp.FormData(quote_fields=False)
                for name, value in request_data.json_parameters.items():
                    data.add_field(name, value)
                for name, (filename, content, mimetype) in files.items():
                    data.add_field(name, content, filename=filename, content_type=mimetype)
            else:
                # The form encoded here, as aiohttp would encode a dict: handing it the dict
                # builds a FormData and a MultipartWriter (a random boundary, a regex compiled)
                # for every call, about a sixth of PTB's CPU for an update under a burst.
                data = urlencode(request_data.json_parameters, doseq=True).encode()
                headers = FORM_HEADERS
        try:
            async with self._session.request(method, url, data=data, headers=headers, timeout=timeout) as response:
                body = await response.read()
        except TimeoutError as err:  # aiohttp's timeouts are TimeoutErrors
            raise TimedOut(f"the Bot API did not answer in time ({type(err).__name__})") from err
        except aiohttp.ClientError as err:
            # The class name says what failed when the message is empty.
            raise NetworkError(f"aiohttp.{type(err).__name__}: {err}") from err
        if response.status >= 400:
            # Only refusals and failures: a line per call costs CPU under a burst (httpx logged
            # every call). The URL holds the token; chat.redact masks it on every handler.
            log.info("Bot API %s %s answered %d", method, url, response.status)
        return response.status, body
