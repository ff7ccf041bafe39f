"""Retry classification and schedule, through the real SDK over httpx2.MockTransport (no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from tracegen.config import RunConfig
from tracegen.engine import SdkChatClient, call_with_retries, fatal_error, is_retryable, retry_policy
from tracegen.engine.client import (
    NO_KEY_MESSAGE,
    Endpoint,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    make_client,
    parse_retry_after,
    resolve_endpoint,
)
from tracegen.errors import AuthError, QuotaError

KEY = "sk-test-SECRET-0123456789"
BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.7,
    "top_p": 0.95,
    "max_tokens": 16,
}


def ok_json(content: str = "hello", finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }


def err_json(message: str, code: str | None, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class Script:
    """A MockTransport handler answering from a list of (status, json, headers)."""

    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        self.answers = answers
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        status, payload, headers = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return httpx2.Response(status, json=payload, headers=headers)


def sdk_client(script: Script) -> SdkChatClient:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(script))
    return SdkChatClient(
        Endpoint(base_url="https://api.example.test/v1", api_key=KEY),
        concurrency=4,
        timeout_s=5,
        http_client=http,
    )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


# ---- classification ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (429, "rate_limit_exceeded", True),
        (429, "insufficient_quota", False),
        (408, None, True),
        (409, None, True),
        (500, None, True),
        (502, None, True),
        (503, None, True),
        (400, "invalid_value", False),
        (401, "invalid_api_key", False),
        (403, None, False),
        (404, "model_not_found", False),
        (422, None, False),
    ],
)
def test_http_classification(status: int, code: str | None, retry: bool) -> None:
    assert is_retryable(TeacherHTTPError(status, code, "m")) is retry


def test_timeouts_and_connection_errors_are_retried() -> None:
    assert is_retryable(TeacherTimeout())
    assert is_retryable(TeacherConnectionError("reset", sent=None))
    assert not is_retryable(ValueError("x"))


def test_fatal_errors() -> None:
    assert isinstance(fatal_error(TeacherHTTPError(401, "invalid_api_key", "bad key")), AuthError)
    assert isinstance(fatal_error(TeacherHTTPError(403, None, "no access")), AuthError)
    assert isinstance(fatal_error(TeacherHTTPError(429, "insufficient_quota", "no credit")), QuotaError)
    assert fatal_error(TeacherHTTPError(429, "rate_limit_exceeded", "slow down")) is None
    assert fatal_error(TeacherHTTPError(500, None, "oops")) is None


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


# ---- schedule ------------------------------------------------------------------------------------------


async def test_schedule_exponential_full_jitter_with_injected_sleep() -> None:
    sleeps = Sleeps()
    policy = retry_policy(5, sleep=sleeps, rng=lambda: 1.0, base_s=0.5, cap_s=3.0)
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise TeacherHTTPError(500, None, "boom")

    chain: list[Any] = []
    with pytest.raises(TeacherHTTPError):
        await call_with_retries(policy, attempt, chain)
    assert calls == 5
    assert len(chain) == 5
    assert sleeps.calls == [0.5, 1.0, 2.0, 3.0]  # ceiling doubles, capped at cap_s


async def test_retry_after_is_a_floor_of_the_backoff() -> None:
    sleeps = Sleeps()
    policy = retry_policy(3, sleep=sleeps, rng=lambda: 0.1)
    answers = iter([TeacherHTTPError(429, "rate_limit_exceeded", "slow", retry_after_s=7.0)])

    async def attempt() -> str:
        err = next(answers, None)
        if err is not None:
            raise err
        return "ok"

    assert await call_with_retries(policy, attempt) == "ok"
    assert sleeps.calls == [7.0]


async def test_stop_strategy_stops_retrying_when_told() -> None:
    sleeps = Sleeps()
    stop = False
    policy = retry_policy(10, sleep=sleeps, should_stop=lambda: stop, rng=lambda: 0.0)
    calls = 0

    async def attempt() -> str:
        nonlocal calls, stop
        calls += 1
        if calls == 2:
            stop = True
        raise TeacherTimeout()

    with pytest.raises(TeacherTimeout):
        await call_with_retries(policy, attempt)
    assert calls == 2


# ---- the SDK over MockTransport --------------------------------------------------------------------------


async def test_sdk_retries_5xx_then_succeeds() -> None:
    script = Script(
        [
            (500, err_json("server error", None, "server_error"), {}),
            (503, err_json("overloaded", None, "server_error"), {"retry-after-ms": "1200"}),
            (200, ok_json(), {"x-ratelimit-limit-requests": "500"}),
        ]
    )
    client = sdk_client(script)
    sleeps = Sleeps()
    policy = retry_policy(5, sleep=sleeps, rng=lambda: 0.0)
    result = await call_with_retries(policy, lambda: client.complete(BODY, "cot.1"))
    await client.aclose()
    assert len(script.requests) == 3
    assert sleeps.calls == [0.0, 1.2]
    assert result.content == "hello"
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (9, 2)
    assert result.model_returned == "gpt-4o-mini-2024-07-18"
    assert result.headers["x-ratelimit-limit-requests"] == "500"
    sent = json.loads(script.requests[0].content)
    assert sent == BODY
    assert script.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_sdk_400_is_not_retried_and_keeps_the_api_message() -> None:
    script = Script([(400, err_json("Invalid 'top_p': too big.", "invalid_value"), {})])
    client = sdk_client(script)
    with pytest.raises(TeacherHTTPError) as info:
        await call_with_retries(retry_policy(5, sleep=Sleeps()), lambda: client.complete(BODY, "x"))
    await client.aclose()
    assert len(script.requests) == 1
    assert info.value.status == 400
    assert info.value.code == "invalid_value"
    assert info.value.describe()["message"] == "Invalid 'top_p': too big."


@pytest.mark.parametrize(
    ("status", "code", "fatal"),
    [(401, "invalid_api_key", AuthError), (429, "insufficient_quota", QuotaError)],
)
async def test_sdk_fatal_answers_are_not_retried(status: int, code: str, fatal: type[Exception]) -> None:
    script = Script([(status, err_json(f"rejected {KEY}", code, code), {})])
    client = sdk_client(script)
    with pytest.raises(TeacherHTTPError) as info:
        await call_with_retries(retry_policy(5, sleep=Sleeps()), lambda: client.complete(BODY, "x"))
    await client.aclose()
    assert len(script.requests) == 1
    err = fatal_error(info.value)
    assert isinstance(err, fatal)
    assert KEY not in str(err)  # the key is masked even when the server echoes it
    assert KEY not in str(info.value)


async def test_sdk_timeout_maps_to_teacher_timeout() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("slow", request=request)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = SdkChatClient(Endpoint("https://x.test/v1", KEY), concurrency=1, timeout_s=1, http_client=http)
    with pytest.raises(TeacherTimeout) as info:
        await client.complete(BODY, "x")
    assert info.value.sent is None
    await client.aclose()


async def test_sdk_connect_error_is_known_unsent() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = SdkChatClient(Endpoint("https://x.test/v1", KEY), concurrency=1, timeout_s=1, http_client=http)
    with pytest.raises(TeacherConnectionError) as info:
        await client.complete(BODY, "x")
    assert info.value.sent is False
    await client.aclose()


# ---- endpoint resolution -------------------------------------------------------------------------------


def test_no_key_and_no_base_url_is_one_clear_line() -> None:
    with pytest.raises(AuthError) as info:
        resolve_endpoint(RunConfig(), env={})
    assert str(info.value) == NO_KEY_MESSAGE
    assert "\n" not in str(info.value)
    with pytest.raises(AuthError):
        make_client(RunConfig(), env={})


def test_endpoint_resolution_and_repr_hides_the_key() -> None:
    ep = resolve_endpoint(RunConfig(), env={"OPENAI_API_KEY": KEY, "OPENAI_PROJECT": "proj_1"})
    assert ep.base_url == "https://api.openai.com/v1"
    assert ep.project == "proj_1"
    assert KEY not in repr(ep)
    local = resolve_endpoint(RunConfig(base_url="http://127.0.0.1:9/v1/"), env={})
    assert local.base_url == "http://127.0.0.1:9/v1"
    assert local.api_key is None
    env_url = resolve_endpoint(RunConfig(), env={"OPENAI_BASE_URL": "http://h/v1"})
    assert env_url.base_url == "http://h/v1"
