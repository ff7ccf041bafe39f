"""The fake server's aiohttp application: chat completions, models, admin endpoints.

A chat request goes through, in order: auth (401) → body validation (400, 404 unknown model, 400
context_length_exceeded) → ``insufficient_quota`` (429) → ``max_in_flight`` (503) → rate limits (429 with
``retry-after``) → one seeded fault draw (500 / 503 / timeout / drop / ok) → billing in the ledger → latency →
delivery. Requests refused before the rate limiter cost no rate-limit capacity; 500/503 ones do. With
``gateway`` set, every answer is then rewritten as a LiteLLM proxy in front of this server would (see
:mod:`.gateway`).

Seeded randomness: latency and faults come from one ``random.Random(seed)`` drawn in arrival order, so a
retried request gets a fresh draw; answer content depends only on ``seed`` and the request's content.

Admin endpoints (no auth): ``GET /_fake/ledger``, ``GET /_fake/counters``, ``GET /_fake/options``,
``POST /_fake/options`` (JSON of fields to change), ``POST /_fake/reset`` (forget ledger, counters, limits,
files and batches; re-seed).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .batches import BatchStore, add_batch_routes
from .chat import Answerer, ChatRequest, Computed, parse_chat_body
from .gateway import gateway_error, gateway_headers
from .ledger import Counters, Ledger
from .options import FakeOptions
from .ratelimit import RateLimiter, format_duration
from .wire import ApiError, dumps, error_response, json_response, new_id

__all__ = ["STATE", "FakeState", "api", "build_app"]

_JSON = "application/json"


class FakeState:
    """Everything the server knows; lives on (and is only touched from) the server's event loop."""

    def __init__(self, opts: FakeOptions) -> None:
        self.apply(opts)
        self.ledger = Ledger()
        self.counters = Counters()
        self.batches = BatchStore(self)
        self.hanging: set[asyncio.Task[Any]] = set()
        self.busy = 0  # requests past the max_in_flight check and not yet answered

    def apply(self, opts: FakeOptions) -> None:
        """Switch to ``opts`` (rate-limit windows and random draws start afresh)."""
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.answerer = Answerer(opts)
        self.limiter = RateLimiter(
            opts.requests_per_minute,
            opts.tokens_per_minute,
            opts.ratelimit_mode,
            asyncio.get_running_loop().time(),
        )
        self._bearer = None if opts.api_key is None else f"Bearer {opts.api_key}".encode()
        self.hostile_served = 0  # hostile answers given since the options were applied

    def take_hostile(self) -> str | None:
        """The hostile mode for this request, or None once ``hostile_count`` answers were hostile."""
        opts = self.opts
        if opts.hostile is None or (
            opts.hostile_count is not None and self.hostile_served >= opts.hostile_count
        ):
            return None
        self.hostile_served += 1
        return opts.hostile

    def reset(self) -> None:
        """Forget the ledger, counters, rate-limit windows, files and batches; re-seed."""
        self.batches.close()
        self.apply(self.opts)
        self.ledger = Ledger()
        self.counters = Counters()
        self.batches = BatchStore(self)

    def check_auth(self, request: web.Request) -> None:
        """Raise 401 unless the request carries the configured key (the message never echoes a key)."""
        if self._bearer is None:
            return
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._bearer):
            self.counters.unauthorized += 1
            raise ApiError(
                401,
                "Incorrect API key provided. Check the key the client sends to this tracegen fake server.",
                code="invalid_api_key",
            )

    def latency_s(self) -> float:
        opts = self.opts
        delay = opts.latency_mean_s
        if opts.latency_jitter_s:
            if opts.latency_distribution == "normal":
                delay = self.rng.gauss(opts.latency_mean_s, opts.latency_jitter_s)
            else:
                delay += self.rng.uniform(-opts.latency_jitter_s, opts.latency_jitter_s)
        if opts.latency_under_load_s:
            delay += opts.latency_under_load_s * max(0, self.counters.in_flight - 1)
        return max(0.0, delay)


STATE = web.AppKey("tracegen_fake_state", FakeState)


def _alive(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _chat(st: FakeState, request: web.Request) -> web.StreamResponse:
    opts = st.opts
    counters = st.counters
    st.check_auth(request)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(
            400, "We could not parse the JSON body of your request. Send valid JSON.", code="invalid_json"
        ) from None
    req = parse_chat_body(body, opts)
    computed = st.answerer.compute(req)
    hostile_mode = st.take_hostile()
    if hostile_mode is not None:
        from .hostile import respond

        if hostile_mode.endswith("_usage") or hostile_mode in ("ratelimit_negative", "markup"):
            st.ledger.bill(  # the server did the work: it bills the true counts, whatever it reports
                key=req.key,
                model=req.model,
                prompt_tokens=computed.prompt_tokens,
                completion_tokens=computed.completion_tokens,
                custom_id=request.headers.get("X-Request-Id"),
                kind="online",
            )
        return await respond(hostile_mode, opts.hostile_body_bytes, request, req, computed)
    if opts.insufficient_quota:
        counters.insufficient_quota += 1
        raise ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if opts.max_in_flight is not None and st.busy >= opts.max_in_flight:
        counters.overloaded_503 += 1
        raise ApiError(
            503, "The engine is currently overloaded, please try again later.", type="server_error"
        )
    st.busy += 1
    try:
        return await _admitted(st, request, req, computed)
    finally:
        st.busy -= 1


async def _admitted(
    st: FakeState, request: web.Request, req: ChatRequest, computed: Computed
) -> web.StreamResponse:
    """Rate limits, faults, billing, latency and delivery of a valid request."""
    opts = st.opts
    counters = st.counters
    headers: dict[str, str] = {}
    limiter = st.limiter
    if limiter.enabled:
        now = asyncio.get_running_loop().time()
        decision = limiter.acquire(computed.prompt_tokens + req.n * req.max_tokens, now)
        headers = limiter.headers(now)
        if not decision.admitted:
            counters.rate_limited += 1
            cost = computed.prompt_tokens + req.n * req.max_tokens
            if decision.too_large:
                raise ApiError(
                    429,
                    f"Request too large for {req.model} on tokens per min (TPM): Limit "
                    f"{opts.tokens_per_minute}, Requested {cost}. The input or output tokens must be "
                    "reduced in order to run successfully.",
                    type="tokens",
                    code="rate_limit_exceeded",
                    headers=headers,
                )
            wait_s = decision.retry_after_s
            limit = opts.requests_per_minute if decision.limited_by == "requests" else opts.tokens_per_minute
            headers["retry-after"] = str(max(1, math.ceil(wait_s)))
            headers["retry-after-ms"] = str(max(1, math.ceil(wait_s * 1000)))
            raise ApiError(
                429,
                f"Rate limit reached for {req.model} on {decision.limited_by} per min: Limit {limit}. "
                f"Please try again in {format_duration(wait_s)}.",
                type=decision.limited_by,
                code="rate_limit_exceeded",
                headers=headers,
            )

    fault = "ok"
    if opts.error_rate_500 or opts.error_rate_503 or opts.timeout_rate or opts.drop_rate:
        u = st.rng.random()
        for name, rate in (
            ("500", opts.error_rate_500),
            ("503", opts.error_rate_503),
            ("timeout", opts.timeout_rate),
            ("drop", opts.drop_rate),
        ):
            if u < rate:
                fault = name
                break
            u -= rate
    delay = (
        st.latency_s() if opts.latency_mean_s or opts.latency_jitter_s or opts.latency_under_load_s else 0.0
    )
    if fault == "500":
        counters.injected_500 += 1
        if delay:
            await asyncio.sleep(delay)
        raise ApiError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
            headers=headers,
        )
    if fault == "503":
        counters.injected_503 += 1
        if delay:
            await asyncio.sleep(delay)
        raise ApiError(
            503,
            "The engine is currently overloaded, please try again later.",
            type="server_error",
            headers=headers,
        )

    entry = st.ledger.bill(
        key=req.key,
        model=req.answered_by or req.model,
        prompt_tokens=computed.prompt_tokens,
        completion_tokens=computed.completion_tokens,
        cached_tokens=computed.cached_tokens,
        custom_id=request.headers.get("X-Request-Id"),
        kind="online",
    )
    body = dumps(st.answerer.completion(req, computed))
    headers["Content-Type"] = _JSON
    headers["x-request-id"] = new_id("req_")
    headers["openai-processing-ms"] = str(int(delay * 1000))
    if fault == "timeout":
        counters.timeouts += 1
        task = asyncio.current_task()
        if task is not None:
            st.hanging.add(task)
        try:
            await asyncio.sleep(opts.hang_s + delay)
        finally:
            if task is not None:
                st.hanging.discard(task)
    elif delay:
        await asyncio.sleep(delay)
    if fault == "drop":
        counters.drops += 1
        return await _drop(request, body, headers)
    entry.delivered = _alive(request)
    return web.Response(body=body, status=200, headers=gateway_headers(headers) if opts.gateway else headers)


async def _drop(request: web.Request, body: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Send the status line, headers and half the body, then cut the connection."""
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.abort()
    return resp


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    st = request.app[STATE]
    counters = st.counters
    counters.requests += 1
    counters.in_flight += 1
    if counters.in_flight > counters.in_flight_max:
        counters.in_flight_max = counters.in_flight
    try:
        resp = await _chat(st, request)
    except ApiError as err:
        resp = error_response(gateway_error(err) if st.opts.gateway else err)
    finally:
        counters.in_flight -= 1
    counters.status[resp.status] += 1
    return resp


def _model_obj(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tracegen-fake"}


async def handle_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the known models (or a few well-known names when any model is accepted)."""
    st = request.app[STATE]
    st.check_auth(request)
    names = st.opts.known_models or ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-3.5-turbo")
    return json_response({"object": "list", "data": [_model_obj(n) for n in names]})


async def handle_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``."""
    st = request.app[STATE]
    st.check_auth(request)
    name = request.match_info["model"]
    if st.opts.known_models is not None and name not in st.opts.known_models:
        raise ApiError(
            404, f"The model `{name}` does not exist or you do not have access to it.", code="model_not_found"
        )
    return json_response(_model_obj(name))


async def handle_ledger(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].ledger.snapshot())


async def handle_counters(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return json_response(st.counters.snapshot(st.ledger))


async def handle_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return json_response({"reset": True})


async def handle_get_options(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].opts.to_dict())


async def handle_set_options(request: web.Request) -> web.Response:
    """Change some options at run time (e.g. turn ``insufficient_quota`` on mid-run)."""
    st = request.app[STATE]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        current = st.opts.to_dict(include_secrets=True)
        current.update(changes)
        st.apply(FakeOptions.from_dict(current))
    except Exception as e:  # any bad input is a 400 with its one-line reason
        raise ApiError(400, f"bad options: {e}") from None
    return json_response(st.opts.to_dict())


async def handle_not_found(request: web.Request) -> web.Response:
    raise ApiError(404, f"Invalid URL ({request.method} {request.path})")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api(handler: Handler) -> Handler:
    """Wrap ``handler`` so an ``ApiError`` becomes its OpenAI-style JSON response."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err)

    return wrapped


async def _on_shutdown(app: web.Application) -> None:
    st = app[STATE]
    for task in list(st.hanging):
        task.cancel()
    st.batches.close()


def build_app(opts: FakeOptions) -> web.Application:
    """The aiohttp application; must be called with the server's event loop running."""
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app[STATE] = FakeState(opts)
    router = app.router
    for prefix in ("/v1", ""):  # the OpenAI routes answer with and without the /v1 prefix
        router.add_post(f"{prefix}/chat/completions", handle_chat)  # catches its own errors: lean hot path
        router.add_get(f"{prefix}/models", api(handle_models))
        router.add_get(f"{prefix}/models/{{model}}", api(handle_model))
        add_batch_routes(router, prefix, api)
    router.add_get("/_fake/ledger", handle_ledger)
    router.add_get("/_fake/counters", handle_counters)
    router.add_post("/_fake/reset", handle_reset)
    router.add_get("/_fake/options", handle_get_options)
    router.add_post("/_fake/options", api(handle_set_options))
    router.add_route("*", "/{tail:.*}", api(handle_not_found))
    app.on_shutdown.append(_on_shutdown)
    return app
