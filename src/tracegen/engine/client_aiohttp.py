"""A lean OpenAI chat-completions client on one aiohttp session (transport "aiohttp"; also the default
transport's stand-in when a proxy variable applies, and the Azure client's base).

One ``ClientSession`` with a ``TCPConnector(limit=concurrency)``; headers built once; the request body sent
as the bytes the engine already serialized for its cache key. No pydantic, no per-request allocations
beyond the request itself. Errors are mapped to the neutral ``Teacher*`` errors of :mod:`.client`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from ._json import dumps
from .client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ChatResult,
    Endpoint,
    TeacherConnectionError,
    TeacherTimeout,
    http_error,
    parse_completion,
    request_headers,
    too_large,
)

__all__ = ["AiohttpChatClient"]


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY for ``url``, as aiohttp's trust_env would find them."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return str(proxy), auth


class AiohttpChatClient:
    """``ChatClient`` speaking the OpenAI protocol over aiohttp. Open lazily, inside the running loop."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int,
        timeout_s: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._endpoint = endpoint
        self._max_bytes = max_response_bytes
        self._url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        headers = request_headers(endpoint)
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
        )
        timeout = aiohttp.ClientTimeout(total=self._timeout_s, sock_connect=min(self._timeout_s, 30.0))
        # trust_env=True would cost two thread-pool hops per request (netrc, proxy lookup): look the
        # proxy up once here instead, and keep no cookies.
        self._proxy, self._proxy_auth = _env_proxy(self._url)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers=self._headers,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """POST one chat completion; raise TeacherHTTPError / TeacherConnectionError / TeacherTimeout."""
        session = self._session or self._open()
        data = payload if payload is not None else dumps(body)
        try:
            async with session.post(
                self._url,
                data=data,
                headers={"X-Client-Request-Id": request_id},
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            ) as resp:
                raw = await self._read(resp)
                status = resp.status
                headers = resp.headers
        except aiohttp.ConnectionTimeoutError as e:
            raise TeacherTimeout(f"connect timed out: {self._redact(e)}", sent=False) from None
        except aiohttp.ClientConnectorError as e:
            raise TeacherConnectionError(
                f"cannot connect to {self._endpoint.display_url}: {self._redact(e)}", sent=False
            ) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise TeacherTimeout(f"no answer within {self._timeout_s:g} s", sent=None) from None
        except aiohttp.ClientError as e:
            raise TeacherConnectionError(
                f"connection lost: {type(e).__name__}: {self._redact(e)}", sent=None
            ) from None
        if status >= 300:
            raise http_error(self._endpoint, status, raw, headers)
        return parse_completion(raw, status, headers)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, read in chunks and refused past ``max_response_bytes`` (never held whole beyond it)."""
        limit = self._max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            resp.close()
            raise too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                resp.close()
                raise too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _redact(self, e: BaseException) -> str:
        return self._endpoint.redact(str(e))

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
