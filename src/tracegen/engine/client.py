"""The seam between the engine and the teacher: a ``ChatClient`` protocol and its neutral errors.

Three implementations speak the OpenAI chat-completions protocol (the ``transport`` setting picks one):

- :class:`~tracegen.engine.client_http.HttpChatClient` ("http", default): tracegen's own HTTP/1.1 client,
  kept-alive connections and nothing else, the least CPU per request measured here; when a proxy variable
  applies to the URL, the aiohttp transport is used instead (it speaks proxies);
- :class:`~tracegen.engine.client_aiohttp.AiohttpChatClient` ("aiohttp"): one aiohttp session, lean;
- :class:`~tracegen.engine.client_sdk.SdkChatClient` ("sdk"): the official ``openai.AsyncOpenAI`` with its
  retries off, on the SDK's aiohttp transport.

All raise only these errors, so retry policy and budget accounting never look at a library's exceptions::

    TeacherCallError              one call failed (the engine decides: retry, fail the record, stop the run)
    ├── TeacherHTTPError          the endpoint answered with a non-2xx status
    ├── TeacherConnectionError    no answer: refused, reset, dropped mid-answer, unreadable body
    │   └── TeacherProtocolError  an answer that is not an OpenAI chat completion (HTML page, no choices,
    │                             wrong shape) or a body over ``max_response_bytes``
    └── TeacherTimeout            no answer within timeout_s

``sent`` says whether the request may have reached the endpoint (True), surely did not (False) or is
unknown (None); the budget keeps a request that may have been billed charged at its reservation.
``billed`` on a protocol error says whether the server may have billed it: an answer that is not a chat
completion reports no usage, so nothing was billed and its reservation is released; a body cut at the size
limit was a real (billed) answer, charged at its reservation.
Messages never contain the API key, an Authorization header or URL credentials (:mod:`tracegen.redact`).

Every transport parses a 2xx body with :func:`parse_completion` (one definition of "an OpenAI chat
completion") and any other with :func:`http_error`, and reads at most ``max_response_bytes`` of any body (:data:`DEFAULT_MAX_RESPONSE_BYTES`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._version import __version__
from ..config import url_credentials_problem
from ..errors import (
    ConfigError,
    MissingKeyError,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherProtocolError,
    TeacherTimeout,
)
from ..redact import excerpt, redact, redact_url, register_secret
from ._json import loads
from .retry_after import retry_after_s
from .settings import EngineSettings
from .usage import read_count

if TYPE_CHECKING:
    from ..config import RunConfig
    from .client_aiohttp import AiohttpChatClient
    from .client_http import HttpChatClient
    from .client_sdk import SdkChatClient

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "MAX_RETRY_AFTER_S",
    "ChatClient",
    "ChatResult",
    "Endpoint",
    "HasBaseUrl",
    "TeacherCallError",
    "TeacherConnectionError",
    "TeacherHTTPError",
    "TeacherProtocolError",
    "TeacherTimeout",
    "client_for",
    "http_error",
    "make_client",
    "parse_completion",
    "parse_retry_after",
    "request_headers",
    "resolve_endpoint",
    "teacher_client",
    "usage_detail",
]

log = logging.getLogger("tracegen.engine.client")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Largest response body read (16 MiB): far above any real chat completion (a 128k-token answer is ~1 MiB).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Longest wait a ``retry-after`` may ask for; beyond it the run stops with the server's figure.
MAX_RETRY_AFTER_S = 900.0

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
    reasoning_tokens: int | None = None
    """Hidden reasoning tokens (``usage.completion_tokens_details``), part of ``completion_tokens``."""
    cached_tokens: int | None = None
    """Prompt tokens served from the prompt cache (``usage.prompt_tokens_details``)."""
    usage_problem: str | None = None
    """What was malformed in ``usage`` (a string, a float, a negative count), else None; the malformed
    count is left None and the engine charges the reservation (:mod:`.usage`)."""


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

    def __post_init__(self) -> None:
        register_secret(self.api_key)

    @property
    def display_url(self) -> str:
        """The base URL as it may be shown: no user:password@, no query string."""
        return redact_url(self.base_url)

    def redact(self, text: str) -> str:
        """``text`` with the API key, every other known secret and URL credentials masked."""
        return redact(text, (self.api_key,) if self.api_key else ())


class HasBaseUrl(Protocol):
    """Where the teacher is, as the run asks for it (a RunConfig, or the engine's Teacher)."""

    @property
    def base_url(self) -> str | None: ...


def base_url_of(config: HasBaseUrl, env: Mapping[str, str] | None = None) -> str:
    """The base URL requests go to: config.base_url > OPENAI_BASE_URL > api.openai.com (no trailing /)."""
    env = os.environ if env is None else env
    return (config.base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_endpoint(config: HasBaseUrl, env: Mapping[str, str] | None = None) -> Endpoint:
    """Base URL: config.base_url > OPENAI_BASE_URL > api.openai.com; key from OPENAI_API_KEY only.

    Raises AuthError when there is neither a key nor a base URL (a local server may need no key).
    """
    env = os.environ if env is None else env
    key = env.get("OPENAI_API_KEY") or None
    base_url = config.base_url or env.get("OPENAI_BASE_URL") or None
    if key is None and base_url is None:
        raise MissingKeyError(NO_KEY_MESSAGE)
    if base_url is not None and (problem := url_credentials_problem(base_url)) is not None:
        where = "--base-url" if config.base_url else "OPENAI_BASE_URL"
        raise ConfigError(f"{where}: {problem}")
    return Endpoint(
        base_url=base_url_of(config, env),
        api_key=key,
        organization=env.get("OPENAI_ORG_ID") or env.get("OPENAI_ORGANIZATION") or None,
        project=env.get("OPENAI_PROJECT") or env.get("OPENAI_PROJECT_ID") or None,
    )


def make_client(config: RunConfig, env: Mapping[str, str] | None = None) -> ChatClient:
    """The client ``config.transport`` names, for the endpoint the config and environment give."""
    return teacher_client(EngineSettings.of(config), env)


def teacher_client(settings: EngineSettings, env: Mapping[str, str] | None = None) -> ChatClient:
    """The client the teacher's ``transport`` names, for the endpoint its settings and ``env`` give."""
    teacher = settings.teacher
    env = os.environ if env is None else env
    return client_for(
        teacher.transport,
        resolve_endpoint(teacher, env),
        concurrency=settings.limits.concurrency,
        timeout_s=teacher.timeout_s,
        max_response_bytes=teacher.max_response_bytes,
        env=env,
    )


def client_for(
    transport: str,
    endpoint: Endpoint,
    *,
    concurrency: int,
    timeout_s: float,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    env: Mapping[str, str] | None = None,
) -> ChatClient:
    """A ``transport`` client for ``endpoint``; "http" becomes "aiohttp" when a proxy variable of ``env``
    (default os.environ) applies to the endpoint's URL. Each transport's module loads only here."""
    cls: type[HttpChatClient] | type[AiohttpChatClient] | type[SdkChatClient]
    if transport == "http":
        from .client_http import HttpChatClient, proxy_for

        if proxy_for(endpoint.base_url, os.environ if env is None else env) is None:
            cls = HttpChatClient
        else:
            log.info("a proxy is set for %s: using the aiohttp transport", endpoint.display_url)
            from .client_aiohttp import AiohttpChatClient as cls
    elif transport == "aiohttp":
        from .client_aiohttp import AiohttpChatClient as cls
    elif transport == "sdk":
        from .client_sdk import SdkChatClient as cls  # the openai SDK loads only here
    else:
        raise ConfigError(f"unknown transport {transport!r}; use --transport http, aiohttp or sdk")
    return cls(endpoint, concurrency=concurrency, timeout_s=timeout_s, max_response_bytes=max_response_bytes)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from whichever form the server used (see :mod:`.retry_after`), or None."""
    return retry_after_s(headers)


def parse_completion(raw: bytes, status: int, headers: Mapping[str, str]) -> ChatResult:
    """The ChatResult in a 2xx body; :class:`TeacherProtocolError` when it is not an OpenAI chat completion.

    Checked: a JSON object whose ``choices`` is a non-empty list of objects, whose ``message`` (if any) is
    an object with a string (or null) ``content``, and whose ``usage`` (if any) is an object. Malformed
    token counts do not fail the answer: they are reported in ``usage_problem``.
    """

    def bad(what: str) -> TeacherProtocolError:
        return TeacherProtocolError(
            f"HTTP {status} with a body that is not an OpenAI chat completion ({what}): {excerpt(raw, 200)!r}"
        )

    try:
        obj = loads(raw)
    except (ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        raise bad("no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise bad("choices[0] is not an object")
    message = choice.get("message")
    if message is None:
        message = {}
    if not isinstance(message, dict):
        raise bad("choices[0].message is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise bad("choices[0].message.content is not a string")
    finish_reason = choice.get("finish_reason")
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise bad("choices[0].finish_reason is not a string")
    usage = obj.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        raise bad("usage is not an object")
    pt = usage.get("prompt_tokens")
    ct = usage.get("completion_tokens")
    problem: str | None = None
    # the usual answer (two counts, plain ints >= 0) skips read_count, which would return them as they are
    if not (type(pt) is int and pt >= 0 and type(ct) is int and ct >= 0):
        pt, ct = read_count(pt), read_count(ct)
        problems = [
            f"{name} {v}"
            for name, v in (("prompt_tokens", pt), ("completion_tokens", ct))
            if isinstance(v, str)
        ]
        problem = "; ".join(problems) or None
    model = obj.get("model")
    return ChatResult(
        content,
        finish_reason,
        pt if isinstance(pt, int) else None,
        ct if isinstance(ct, int) else None,
        model if isinstance(model, str) else "",
        headers,
        usage_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        usage_detail(usage, "prompt_tokens_details", "cached_tokens"),
        problem,
    )


def too_large(limit: int) -> TeacherProtocolError:
    """The error for a response body over ``limit`` bytes (a real answer may have been billed)."""
    return TeacherProtocolError(
        f"response body larger than {limit:,} bytes (max_response_bytes); a chat completion is far "
        "smaller: check --base-url, or raise max_response_bytes in the config file",
        billed=True,
    )


def request_headers(endpoint: Endpoint) -> dict[str, str]:
    """The headers every chat request to ``endpoint`` carries (the key as a Bearer token)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"tracegen/{__version__}",
    }
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    if endpoint.organization:
        headers["OpenAI-Organization"] = endpoint.organization
    if endpoint.project:
        headers["OpenAI-Project"] = endpoint.project
    return headers


def http_error(endpoint: Endpoint, status: int, raw: bytes, headers: Mapping[str, str]) -> TeacherHTTPError:
    """The error for a non-2xx answer: the OpenAI error body's code, type and message (redacted), or an
    excerpt of whatever the body is; a redirect names where it points (the base URL is likely wrong)."""
    code: str | None = None
    message: str | None = None
    etype: str | None = None
    with contextlib.suppress(ValueError, RecursionError):
        obj = loads(raw)
        code, message = error_fields(obj)
        etype = error_type(obj)
    if message is None:
        message = excerpt(raw, 200) or "(empty body)"
    if 300 <= status < 400:
        location = next((v for k, v in headers.items() if k.lower() == "location"), None)
        where = f"redirects to {redact_url(location)}" if location else "redirects"
        message = f"the endpoint {where}; set --base-url to the final URL ({message})"
    return TeacherHTTPError(
        status,
        code,
        endpoint.redact(message),
        retry_after_s=parse_retry_after(headers),
        headers=headers,
        error_type=etype,
    )


def error_fields(raw: Any) -> tuple[str | None, str | None]:
    """(code, message) from an OpenAI-style error body (``{"error": {...}}`` or the inner object)."""
    if isinstance(raw, dict):
        inner = raw.get("error", raw)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            message = inner.get("message")
            return (
                redact(str(code))[:200] if code is not None else None,
                redact(str(message)) if message is not None else None,
            )
        if isinstance(inner, str):
            return None, redact(inner)
    return None, None


def usage_detail(usage: Any, details: str, name: str) -> int | None:
    """``usage[details][name]`` as an int (e.g. completion_tokens_details.reasoning_tokens), else None."""
    inner = usage.get(details) if isinstance(usage, dict) else None
    value = inner.get(name) if isinstance(inner, dict) else None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def error_type(raw: Any) -> str | None:
    """``error.type`` of an OpenAI-style error body, or None."""
    if isinstance(raw, dict):
        inner = raw.get("error", raw)
        if isinstance(inner, dict) and inner.get("type") is not None:
            return str(inner["type"])
    return None
