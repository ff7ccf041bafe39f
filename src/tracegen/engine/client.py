"""The seam between the engine and the teacher: a ``ChatClient`` protocol and its neutral errors.

Two implementations speak the OpenAI chat-completions protocol (``config.transport`` picks one):

- :class:`~tracegen.engine.client_aiohttp.AiohttpChatClient` ("aiohttp", default): one aiohttp session, lean,
  the fastest measured here;
- :class:`~tracegen.engine.client_sdk.SdkChatClient` ("sdk"): the official ``openai.AsyncOpenAI`` with its
  retries off, on the SDK's aiohttp transport.

Both raise only these errors, so retry policy and budget accounting never look at a library's exceptions::

    TeacherCallError              one call failed (the engine decides: retry, fail the record, stop the run)
    ├── TeacherHTTPError          the endpoint answered with a non-2xx status
    ├── TeacherConnectionError    no answer: refused, reset, dropped mid-answer, unreadable body
    └── TeacherTimeout            no answer within timeout_s

``sent`` says whether the request may have reached the endpoint (True), surely did not (False) or is
unknown (None); the budget keeps a request that may have been billed charged at its reservation.
Messages never contain the API key or an Authorization header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, MissingKeyError, TracegenError
from .retry_after import retry_after_s

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = [
    "DEFAULT_BASE_URL",
    "ChatClient",
    "ChatResult",
    "Endpoint",
    "TeacherCallError",
    "TeacherConnectionError",
    "TeacherHTTPError",
    "TeacherTimeout",
    "make_client",
    "parse_retry_after",
    "resolve_endpoint",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

NO_KEY_MESSAGE = (
    "no API key: set OPENAI_API_KEY, or pass --base-url for a local/compatible server, "
    "or rehearse offline with `tracegen run --rehearse` (built-in fake server, no key)"
)


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One answered chat completion, as the engine needs it."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    """Billed prompt tokens (``usage``), None when the endpoint sent no usage."""
    completion_tokens: int | None
    model_returned: str
    headers: Mapping[str, str]
    """Response headers (case-insensitive mapping): the limiter reads ``x-ratelimit-*`` from them."""


class TeacherCallError(TracegenError):
    """One call to the teacher failed; the engine retries it, fails the record or stops the run."""

    sent: bool | None = None

    def describe(self) -> dict[str, Any]:
        """The error as failed.jsonl stores it: type, status, code, message."""
        return {"type": type(self).__name__, "status": None, "code": None, "message": str(self)}


class TeacherHTTPError(TeacherCallError):
    """The endpoint answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        retry_after_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.error_type = error_type
        """The body's ``error.type`` (``code`` falls back to it), for :mod:`.classify`."""
        self.sent = True
        super().__init__(f"HTTP {status}{f' ({code})' if code else ''}: {message}")

    def describe(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }


class TeacherConnectionError(TeacherCallError):
    """No usable answer: connection refused or reset, dropped mid-answer, or an unreadable body."""

    def __init__(self, message: str, *, sent: bool | None) -> None:
        self.sent = sent
        super().__init__(message)


class TeacherTimeout(TeacherCallError):
    """No answer within ``timeout_s``."""

    def __init__(self, message: str = "request timed out", *, sent: bool | None = None) -> None:
        self.sent = sent
        super().__init__(message)


class ChatClient(Protocol):
    """What the engine needs from a teacher: one chat completion per call, neutral errors."""

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """Send ``body`` (``payload``: the same body already serialized, if the caller has it)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where requests go and how they authenticate. ``repr`` never shows the key."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None

    def redact(self, text: str) -> str:
        """``text`` with the API key (if it appears) masked."""
        if self.api_key and self.api_key in text:
            text = text.replace(self.api_key, "***")
        return text


def resolve_endpoint(config: RunConfig, env: Mapping[str, str] | None = None) -> Endpoint:
    """Base URL: config.base_url > OPENAI_BASE_URL > api.openai.com; key from OPENAI_API_KEY only.

    Raises AuthError when there is neither a key nor a base URL (a local server may need no key).
    """
    env = os.environ if env is None else env
    key = env.get("OPENAI_API_KEY") or None
    base_url = config.base_url or env.get("OPENAI_BASE_URL") or None
    if key is None and base_url is None:
        raise MissingKeyError(NO_KEY_MESSAGE)
    return Endpoint(
        base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
        api_key=key,
        organization=env.get("OPENAI_ORG_ID") or env.get("OPENAI_ORGANIZATION") or None,
        project=env.get("OPENAI_PROJECT") or env.get("OPENAI_PROJECT_ID") or None,
    )


def make_client(config: RunConfig, env: Mapping[str, str] | None = None) -> ChatClient:
    """The client ``config.transport`` names, for the endpoint the config and environment give."""
    endpoint = resolve_endpoint(config, env)
    if config.transport == "aiohttp":
        from .client_aiohttp import AiohttpChatClient

        return AiohttpChatClient(endpoint, concurrency=config.concurrency, timeout_s=config.timeout_s)
    if config.transport == "sdk":
        from .client_sdk import SdkChatClient

        return SdkChatClient(endpoint, concurrency=config.concurrency, timeout_s=config.timeout_s)
    raise ConfigError(f"unknown transport {config.transport!r}; use --transport aiohttp or --transport sdk")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from whichever form the server used (see :mod:`.retry_after`), or None."""
    return retry_after_s(headers)


def error_fields(raw: Any) -> tuple[str | None, str | None]:
    """(code, message) from an OpenAI-style error body (``{"error": {...}}`` or the inner object)."""
    if isinstance(raw, dict):
        inner = raw.get("error", raw)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            message = inner.get("message")
            return (str(code) if code is not None else None, str(message) if message is not None else None)
        if isinstance(inner, str):
            return None, inner
    return None, None


def error_type(raw: Any) -> str | None:
    """``error.type`` of an OpenAI-style error body, or None."""
    if isinstance(raw, dict):
        inner = raw.get("error", raw)
        if isinstance(inner, dict) and inner.get("type") is not None:
            return str(inner["type"])
    return None
