"""Hostile modes of the fake server: what a broken proxy, a lying gateway or a hostile endpoint answers.

``FakeOptions(hostile="<mode>", hostile_count=N)`` makes the first ``N`` valid chat requests (every one when
``N`` is unset) get the mode's answer; later ones are honest. Requests are validated first (auth, body), so
a hostile answer is what a server that *accepted* the request sends back. Usage modes bill the fake ledger
with the true counts (the server did the work) and *report* the hostile figures.

Modes (:data:`HOSTILE_MODES`):

- usage: ``negative_usage`` (completion_tokens -1e9), ``huge_usage`` (10**12), ``float_usage`` (1e308),
  ``string_usage`` ("12"), ``over_cap_usage`` (the cap sent + 1000), ``under_usage`` (10 prompt / 20
  completion tokens for every request, like a mock gateway);
- not the OpenAI API: ``html`` (HTTP 200 with a proxy's welcome page), ``no_choices`` (a JSON object
  without choices), ``wrong_shape`` (``choices`` a string), ``huge_body`` (a chunked body of
  ``hostile_body_bytes``), ``huge_error_body`` (the same behind HTTP 500);
- echoed secrets: ``echo_key_code`` (400 whose ``error.code`` is the Authorization header),
  ``echo_key_200`` (200 with a plain-text body echoing it), ``echo_key_text`` (500 with a plain-text body
  where the key starts at character 190, so a 200-character excerpt would cut it);
- waits: ``retry_after_huge`` (429, ``retry-after: 999999``), ``retry_after_inf`` (429, ``retry-after:
  inf`` and ``retry-after-ms: -5``), ``ratelimit_negative`` (honest answers with
  ``x-ratelimit-remaining-*: -1e9`` and an absurd ``x-ratelimit-limit-requests: 1e-9``);
- terminal: ``markup`` (an answer whose ``model`` is Rich markup with a hyperlink and a terminal escape
  sequence), ``markup_error`` (404 whose message carries markup and escape sequences).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .chat import Answerer, ChatRequest, Computed
from .wire import ApiError, dumps

__all__ = ["HOSTILE_MODES", "respond"]

#: Modes that answer honestly but report impossible usage.
USAGE_MODES = frozenset(
    {"negative_usage", "huge_usage", "float_usage", "string_usage", "over_cap_usage", "under_usage"}
)
HOSTILE_MODES = USAGE_MODES | frozenset(
    {
        "html",
        "no_choices",
        "wrong_shape",
        "huge_body",
        "huge_error_body",
        "echo_key_code",
        "echo_key_200",
        "echo_key_text",
        "retry_after_huge",
        "retry_after_inf",
        "ratelimit_negative",
        "markup",
        "markup_error",
    }
)

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1>"
    b"<p>If you see this page, the web server is successfully installed.</p></body></html>"
)
MARKUP = "[link=https://evil.example/]click[/link][bold red]x[/] \x1b]8;;https://evil.example/\x07y\x1b[2J"


def _usage_of(mode: str, req: ChatRequest, computed: Computed) -> dict[str, Any]:
    pt, ct = computed.prompt_tokens, computed.completion_tokens
    bad: dict[str, dict[str, Any]] = {
        "negative_usage": {"prompt_tokens": pt, "completion_tokens": -1_000_000_000},
        "huge_usage": {"prompt_tokens": pt, "completion_tokens": 10**12},
        "float_usage": {"prompt_tokens": pt, "completion_tokens": 1e308},
        "string_usage": {"prompt_tokens": str(pt), "completion_tokens": str(ct)},
        "over_cap_usage": {"prompt_tokens": pt, "completion_tokens": req.max_tokens + 1000},
        "under_usage": {"prompt_tokens": 10, "completion_tokens": 20},
    }
    usage = bad[mode]
    return {**usage, "total_tokens": 30 if mode == "under_usage" else None}


def _key(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth.removeprefix("Bearer ").strip() or "no-key-sent"


async def respond(
    mode: str, opts_body_bytes: int, request: web.Request, req: ChatRequest, computed: Computed
) -> web.StreamResponse:
    """The hostile answer of ``mode`` to a valid request (raises ApiError for the JSON error modes)."""
    if mode in USAGE_MODES:
        body = Answerer.completion(req, computed)
        body["usage"] = _usage_of(mode, req, computed)
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")
    if mode == "html":
        return web.Response(body=HTML_PAGE, content_type="text/html")
    if mode == "no_choices":
        return web.Response(
            body=dumps({"object": "chat.completion", "id": "x"}), content_type="application/json"
        )
    if mode == "wrong_shape":
        return web.Response(
            body=dumps({"object": "chat.completion", "choices": "ok"}), content_type="application/json"
        )
    if mode in ("huge_body", "huge_error_body"):
        status = 200 if mode == "huge_body" else 500
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b" " * (1 << 20)
        sent = 0
        await resp.write(b'{"choices": [{"message": {"content": "')
        while sent < opts_body_bytes:
            await resp.write(chunk)
            sent += len(chunk)
        await resp.write(b'"}}]}')
        await resp.write_eof()
        return resp
    key = _key(request)
    if mode == "echo_key_code":
        raise ApiError(400, "Invalid request.", code=f"bad_key:{key}")
    if mode == "echo_key_200":
        return web.Response(text=f"proxy says: unknown route for key {key}\n", content_type="text/plain")
    if mode == "echo_key_text":
        return web.Response(
            status=500, text="x" * 190 + key + " is not allowed here", content_type="text/plain"
        )
    if mode == "retry_after_huge":
        raise ApiError(
            429, "Rate limit reached.", code="rate_limit_exceeded", headers={"retry-after": "999999"}
        )
    if mode == "retry_after_inf":
        raise ApiError(
            429,
            "Rate limit reached.",
            code="rate_limit_exceeded",
            headers={"retry-after": "inf", "retry-after-ms": "-5"},
        )
    if mode == "ratelimit_negative":
        headers = {
            "x-ratelimit-remaining-requests": "-1e9",
            "x-ratelimit-remaining-tokens": "-1e9",
            "x-ratelimit-limit-requests": "1e-9",
            "x-ratelimit-reset-requests": "-5s",
        }
        return web.Response(
            body=dumps(Answerer.completion(req, computed)), content_type="application/json", headers=headers
        )
    if mode == "markup":
        body = Answerer.completion(req, computed)
        body["model"] = MARKUP
        return web.Response(body=dumps(body), content_type="application/json")
    if mode == "markup_error":
        raise ApiError(404, f"The model {MARKUP} does not exist.", code="model_not_found")
    raise AssertionError(f"unknown hostile mode {mode!r}")
