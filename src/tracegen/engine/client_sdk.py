"""``ChatClient`` on the official SDK: ``openai.AsyncOpenAI`` with its retries off.

Transport: the SDK's aiohttp client (``openai.DefaultAioHttpClient``), measured ~2x faster than its default
httpx2 transport here, sized to ``concurrency`` connections. ``with_streaming_response`` gives the headers
the limiter needs and lets the body be read in chunks, refused past ``max_response_bytes``; the body is then
checked by the same :func:`~.client.parse_completion` as the other transports. SDK exceptions are mapped to
the neutral ``Teacher*`` errors; all retrying is the engine's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx2
import openai

from .client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ChatResult,
    Endpoint,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    error_fields,
    error_type,
    parse_completion,
    parse_retry_after,
    too_large,
)

__all__ = ["SdkChatClient", "open_sdk_client", "sdk_http_error"]

# AsyncOpenAI insists on a key; a keyless local server ignores this placeholder.
_PLACEHOLDER_KEY = "no-key"


def _connect_failed(e: BaseException) -> bool:
    """True when the cause chain shows the connection was never established (request surely not sent)."""
    import aiohttp

    seen: BaseException | None = e
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (httpx2.ConnectError, aiohttp.ClientConnectorError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def open_sdk_client(
    endpoint: Endpoint, *, timeout_s: float, http_client: httpx2.AsyncClient | None = None
) -> openai.AsyncOpenAI:
    """``AsyncOpenAI`` for ``endpoint`` with the SDK's own retries off (all retrying is the engine's)."""
    return openai.AsyncOpenAI(
        api_key=endpoint.api_key or _PLACEHOLDER_KEY,
        base_url=endpoint.base_url,
        organization=endpoint.organization,
        project=endpoint.project,
        max_retries=0,
        timeout=timeout_s,
        http_client=http_client,
    )


def sdk_http_error(e: openai.APIStatusError, redact: Callable[[str], str]) -> TeacherHTTPError:
    """The neutral error for an SDK status error: status, code, redacted message, retry-after, headers."""
    code, message = error_fields(e.body)
    if code is None and e.code is not None:
        code = str(e.code)
    headers = e.response.headers
    return TeacherHTTPError(
        e.status_code,
        code,
        redact(message or e.message),
        retry_after_s=parse_retry_after(headers),
        headers=headers,
        error_type=error_type(e.body) or (str(e.type) if e.type else None),
    )


class _BodyTooLarge(Exception):
    """A response body went past ``max_response_bytes`` while it was read (by us or by the SDK)."""


class _CappedStream(httpx2.AsyncByteStream):
    """A response stream that stops with :class:`_BodyTooLarge` past ``limit`` bytes."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise _BodyTooLarge
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class SdkChatClient:
    """``ChatClient`` over ``AsyncOpenAI(max_retries=0)``; ``http_client`` injects a transport (tests)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int,
        timeout_s: float,
        http_client: httpx2.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._endpoint = endpoint
        self._max_bytes = max_response_bytes
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._http_client = http_client
        self._client: openai.AsyncOpenAI | None = None

    def _open(self) -> openai.AsyncOpenAI:
        http_client = self._http_client
        if http_client is None:
            http_client = openai.DefaultAioHttpClient(
                timeout=self._timeout_s,
                limits=httpx2.Limits(
                    max_connections=self._concurrency, max_keepalive_connections=self._concurrency
                ),
            )
        hooks = http_client.event_hooks
        hooks["response"] = [*hooks.get("response", []), self._cap_body]
        http_client.event_hooks = hooks
        self._client = open_sdk_client(self._endpoint, timeout_s=self._timeout_s, http_client=http_client)
        return self._client

    async def _cap_body(self, response: httpx2.Response) -> None:
        """Every body is read through a cap: an answer's by :meth:`_read`, an error's by the SDK itself."""
        response.stream = _CappedStream(response.stream, self._max_bytes)

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """One chat completion through the SDK (``payload`` is ignored: the SDK serializes itself)."""
        client = self._client or self._open()
        redact = self._endpoint.redact
        try:
            async with client.chat.completions.with_streaming_response.create(
                **body, extra_headers={"X-Client-Request-Id": request_id}
            ) as response:
                status = response.status_code
                headers = response.headers
                raw = await self._read(response)
        except openai.APIStatusError as e:
            raise sdk_http_error(e, redact) from None
        except _BodyTooLarge:
            raise too_large(self._max_bytes) from None
        except openai.APITimeoutError:
            raise TeacherTimeout(f"no answer within {self._timeout_s:g} s", sent=None) from None
        except openai.APIConnectionError as e:
            if _connect_failed(e):
                raise TeacherConnectionError(
                    f"cannot connect to {self._endpoint.display_url}: {redact(str(e.__cause__ or e))}",
                    sent=False,
                ) from None
            raise TeacherConnectionError(f"connection lost: {redact(str(e))}", sent=None) from None
        except (httpx2.TimeoutException, asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise TeacherTimeout(f"no answer within {self._timeout_s:g} s", sent=None) from None
        except (httpx2.TransportError, aiohttp.ClientError) as e:  # raised while reading the body
            raise TeacherConnectionError(
                f"connection lost: {type(e).__name__}: {redact(str(e))}", sent=None
            ) from None
        return parse_completion(raw, status, headers)

    async def _read(self, response: openai.AsyncAPIResponse[Any]) -> bytes:
        """The body (its stream is capped by :meth:`_cap_body`; a declared length over the cap is refused
        before reading)."""
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise too_large(self._max_bytes)
        return b"".join([chunk async for chunk in response.iter_bytes()])

    async def aclose(self) -> None:
        """Close the SDK client and its transport."""
        if self._client is not None:
            await self._client.close()
            self._client = None
