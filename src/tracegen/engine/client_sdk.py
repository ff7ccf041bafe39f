"""``ChatClient`` on the official SDK: ``openai.AsyncOpenAI`` with its retries off.

Transport: the SDK's aiohttp client (``openai.DefaultAioHttpClient``), measured ~2x faster than its default
httpx2 transport here, sized to ``concurrency`` connections. ``with_raw_response`` gives the headers the
limiter needs. SDK exceptions are mapped to the neutral ``Teacher*`` errors; all retrying is the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai

from .client import (
    ChatResult,
    Endpoint,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    error_fields,
    error_type,
    parse_retry_after,
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


class SdkChatClient:
    """``ChatClient`` over ``AsyncOpenAI(max_retries=0)``; ``http_client`` injects a transport (tests)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int,
        timeout_s: float,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._endpoint = endpoint
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
        self._client = open_sdk_client(self._endpoint, timeout_s=self._timeout_s, http_client=http_client)
        return self._client

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """One chat completion through the SDK (``payload`` is ignored: the SDK serializes itself)."""
        client = self._client or self._open()
        redact = self._endpoint.redact
        try:
            raw = await client.chat.completions.with_raw_response.create(
                **body, extra_headers={"X-Client-Request-Id": request_id}
            )
            completion = raw.parse()
        except openai.APIStatusError as e:
            raise sdk_http_error(e, redact) from None
        except openai.APITimeoutError:
            raise TeacherTimeout(f"no answer within {self._timeout_s:g} s", sent=None) from None
        except openai.APIConnectionError as e:
            if _connect_failed(e):
                raise TeacherConnectionError(
                    f"cannot connect to {self._endpoint.base_url}: {redact(str(e.__cause__ or e))}",
                    sent=False,
                ) from None
            raise TeacherConnectionError(f"connection lost: {redact(str(e))}", sent=None) from None
        except openai.APIResponseValidationError as e:
            raise TeacherConnectionError(
                f"answer is not an OpenAI chat completion: {redact(str(e))}", sent=True
            ) from None
        if not completion.choices:
            raise TeacherConnectionError("answer has no choices", sent=True)
        choice = completion.choices[0]
        usage = completion.usage
        return ChatResult(
            content=choice.message.content,
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            model_returned=completion.model or "",
            headers=raw.headers,
        )

    async def aclose(self) -> None:
        """Close the SDK client and its transport."""
        if self._client is not None:
            await self._client.close()
            self._client = None
