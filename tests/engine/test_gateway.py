"""Behind a gateway: errors a proxy rewrote, retry-after in every form, finding a rate nobody states,
the circuit breaker, the first wave, and exit codes a script can trust (issue 18, issue 16 point 1)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tracegen.cli import app
from tracegen.config import RunConfig
from tracegen.engine import Limiter, TeacherHTTPError, call_with_retries, fatal_error, generate, retry_policy
from tracegen.engine.breaker import CircuitBreaker
from tracegen.engine.classify import (
    is_auth_failure,
    is_quota_exhausted,
    is_rate_limited,
    is_retryable,
    quota_by_code,
    quota_by_message,
)
from tracegen.engine.client import TeacherTimeout
from tracegen.engine.retry import rate_limited_attempts
from tracegen.engine.retry_after import retry_after_s
from tracegen.engine.runner import FIRST_WAVE
from tracegen.errors import AuthError, FailingRunError, QuotaError
from tracegen.outcome import run_exit
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer

SAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "flan_sample")
QUOTA_TEXT = "You exceeded your current quota, please check your plan and billing details."
LITELLM_QUOTA = (
    f"litellm.RateLimitError: RateLimitError: OpenAIException - {QUOTA_TEXT}\n\n"
    "LiteLLM: model group 'gpt-4o-mini' failed with the error above. No fallback was attempted."
)


def http(
    status: int, code: str | None, message: str, etype: str | None = None, **headers: str
) -> TeacherHTTPError:
    return TeacherHTTPError(status, code, message, headers=headers, error_type=etype)


def records(n: int) -> list[Record]:
    return [Record(id=f"g.{i}", submix="cot", question=f"Gateway question {i}?") for i in range(n)]


async def no_sleep(_: float) -> None:
    return None


def stats(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "stats.json").read_text())
    return data


# ---- classification ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "err",
    [
        http(429, "insufficient_quota", QUOTA_TEXT, "insufficient_quota"),  # OpenAI, direct
        http(429, "429", LITELLM_QUOTA, "throttling_error"),  # LiteLLM's rewrite: only the message is left
        http(500, "500", f"litellm.APIError: {QUOTA_TEXT}"),  # relayed as a 500
        http(403, None, "Out of call volume quota. Quota will be replenished in 5.03:23:11"),  # Azure APIM
        http(429, "billing_not_active", "Your account is not active, please check your billing details."),
    ],
)
def test_quota_exhaustion_is_recognised_by_code_type_or_message(err: TeacherHTTPError) -> None:
    assert is_quota_exhausted(err)
    assert not is_retryable(err) and not is_rate_limited(err)
    assert isinstance(fatal_error(err), QuotaError)


@pytest.mark.parametrize(
    "err",
    [
        http(429, "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on requests per min: Limit 3."),
        http(429, "429", "litellm.RateLimitError: Rate limit reached for gpt-4o-mini", "throttling_error"),
        http(
            429,
            "429",
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-05-01-preview "
            "have exceeded token rate limit of your current AIServices S0 pricing tier.",
        ),
    ],
)
def test_rate_limits_are_not_quota(err: TeacherHTTPError) -> None:
    assert is_rate_limited(err) and is_retryable(err)
    assert not is_quota_exhausted(err) and fatal_error(err) is None


def test_auth_by_status_or_by_a_gateways_code() -> None:
    assert isinstance(fatal_error(http(401, "invalid_api_key", "Incorrect API key")), AuthError)
    litellm_auth = http(400, "400", "Authentication Error, Invalid proxy server token passed", "auth_error")
    assert is_auth_failure(litellm_auth) and isinstance(fatal_error(litellm_auth), AuthError)
    no_db = http(400, "400", "No connected db.", "no_db_connection")  # LiteLLM without a DB: the breaker's
    assert not is_auth_failure(no_db) and fatal_error(no_db) is None
    assert not is_retryable(no_db)


def test_predicates_compose_like_tenacity() -> None:
    either = quota_by_code | quota_by_message
    both = quota_by_code & quota_by_message
    direct = http(429, "insufficient_quota", QUOTA_TEXT)
    rewritten = http(429, "429", LITELLM_QUOTA, "throttling_error")
    assert either(direct) and either(rewritten)
    assert both(direct) and not both(rewritten)
    assert (~quota_by_code)(rewritten)
    assert not either(TeacherTimeout())


# ---- retry-after ---------------------------------------------------------------------------------------------
def test_retry_after_in_every_form() -> None:
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"retry-after": "20"}) == 20.0
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    date = format_datetime(when + timedelta(seconds=30), usegmt=True)
    assert retry_after_s({"retry-after": date}, now=when.timestamp()) == pytest.approx(30.0)
    assert retry_after_s({"llm_provider-retry-after": "60"}) == 60.0
    assert retry_after_s({"x-ms-retry-after-ms": "250"}) == 0.25
    reset = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    assert retry_after_s(reset) == 360.0
    assert retry_after_s({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}) == 0.02
    prefixed = {
        "llm_provider-x-ratelimit-remaining-requests": "0",
        "llm_provider-x-ratelimit-reset-requests": "1s",
    }
    assert retry_after_s(prefixed) == 1.0
    assert retry_after_s({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}) is None
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None


# ---- rate-limit 429s and a record's attempts -----------------------------------------------------------------
async def test_rate_limit_429s_do_not_use_up_a_records_attempts() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls <= 10:  # ten 429s, more than max_attempts, then an answer
            raise http(429, "429", "Rate limit reached", "throttling_error")
        return "answer"

    policy = retry_policy(3, sleep=no_sleep)
    assert await call_with_retries(policy, attempt) == "answer"
    assert calls == 11


async def test_rate_limit_429s_are_bounded_and_other_failures_count() -> None:
    calls = 0

    async def always_429() -> str:
        nonlocal calls
        calls += 1
        raise http(429, "rate_limit_exceeded", "Rate limit reached")

    with pytest.raises(TeacherHTTPError):
        await call_with_retries(retry_policy(3, sleep=no_sleep), always_429)
    assert calls == rate_limited_attempts(3)

    calls = 0

    async def always_500() -> str:
        nonlocal calls
        calls += 1
        raise http(500, None, "boom")

    with pytest.raises(TeacherHTTPError):
        await call_with_retries(retry_policy(3, sleep=no_sleep), always_500)
    assert calls == 3


# ---- finding the rate (AIMD on requests per minute) ----------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_limiter_finds_a_rate_from_429s_without_headers_then_cuts_and_grows() -> None:
    clock = Clock()
    lim = Limiter(concurrency=64, clock=clock)
    for _ in range(30):  # 30 answers within one second, then a 429 that names no limit
        p = await lim.acquire(10)
        lim.observe(p, status=200, headers={}, latency_s=0.01)
        lim.release(p, 10)
        clock.t += 0.02
    assert lim.requests_per_minute is None
    p = await lim.acquire(10)
    lim.observe(p, status=429, headers={}, retry_after_s=None)
    lim.release(p, None)
    assert lim.found_requests_per_minute is None  # measured when the pause is over
    clock.t += 1.5
    assert lim.wait_s(1) >= 0
    found = lim.found_requests_per_minute
    assert found is not None and found == pytest.approx(30 * 60, rel=0.1)  # 30 per 1 s window
    clock.t += 0.1
    p = lim.try_acquire(10)
    assert p is not None
    lim.observe(p, status=429, headers={}, retry_after_s=None)  # sent after the cut: cut again
    lim.release(p, None)
    cut = lim.found_requests_per_minute
    assert cut is not None and cut < found
    clock.t += 20.0  # additive increase after the pause
    lim.wait_s(1)
    grown = lim.found_requests_per_minute
    assert grown is not None and grown > cut
    # a limit the server states replaces the found one
    p = await lim.acquire(10)
    lim.observe(p, status=200, headers={"x-ratelimit-limit-requests": "600"}, latency_s=0.01)
    lim.release(p, 10)
    assert lim.found_requests_per_minute is None and lim.requests_per_minute == 600


def test_a_long_retry_after_means_a_per_minute_window() -> None:
    clock = Clock()
    lim = Limiter(concurrency=64, clock=clock)
    for _ in range(20):  # 20 admitted over 20 s, then "come back in 60 s"
        p = lim.try_acquire(1)
        assert p is not None
        lim.observe(p, status=200, headers={}, latency_s=0.01)
        lim.release(p, 1)
        clock.t += 1.0
    p = lim.try_acquire(1)
    assert p is not None
    lim.observe(p, status=429, headers={"llm_provider-retry-after": "60"}, retry_after_s=60.0)
    lim.release(p, None)
    clock.t += 61.0
    lim.wait_s(1)
    assert lim.found_requests_per_minute == pytest.approx(20, abs=1)


# ---- the circuit breaker -------------------------------------------------------------------------------------
def test_breaker_trips_on_the_same_error_not_on_a_mix() -> None:
    same = CircuitBreaker()
    assert not any(same.failure(http(500, "500", "no db")) for _ in range(9))
    assert same.failure(http(500, "500", "no db"))
    assert same.tripped == (10, 10)

    mixed = CircuitBreaker()
    for i in range(200):  # 60% failures with successes between them: retries get records through
        if i % 5 < 3:
            assert not mixed.failure(http(500, None, "flaky"))
        else:
            mixed.success()


# ---- the engine against the fake server in gateway mode ------------------------------------------------------
@pytest.mark.parametrize("transport", ["http", "aiohttp", "sdk"])
async def test_quota_rewritten_by_a_gateway_stops_the_run_at_once(tmp_path: Path, transport: str) -> None:
    with FakeServer(FakeOptions(gateway=True, insufficient_quota=True)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64, transport=transport)  # type: ignore[arg-type]
        with pytest.raises(QuotaError) as info:
            await generate(records(100), cfg, tmp_path, env={"OPENAI_API_KEY": "sk-x"}, sleep=no_sleep)
        sent = srv.counters()["requests"]
    assert 1 <= sent <= FIRST_WAVE  # the first wave, never a storm
    assert "exceeded your current quota" in str(info.value)
    assert stats(tmp_path)["stop_reason"] == "quota"


async def test_bad_key_answered_400_by_a_gateway_trips_the_breaker(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(gateway=True, api_key="sk-right")) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64)
        with pytest.raises(FailingRunError) as info:
            await generate(records(300), cfg, tmp_path, env={"OPENAI_API_KEY": "sk-wrong"}, sleep=no_sleep)
        sent = srv.counters()["requests"]
    assert sent < 40  # not 300 records x attempts
    assert "No connected db" in str(info.value) and "sk-wrong" not in str(info.value)
    assert stats(tmp_path)["stop_reason"] == "circuit_breaker"


async def test_gateway_429s_without_headers_fail_no_record(tmp_path: Path) -> None:
    opts = FakeOptions(gateway=True, requests_per_minute=3000, ratelimit_mode="per_second")
    with FakeServer(opts) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64, max_attempts=2)
        result = await generate(records(200), cfg, tmp_path, env={"OPENAI_API_KEY": "sk-x"})
        counters = srv.counters()
    assert (result.succeeded, result.failed) == (200, 0)  # 2 attempts, yet no record failed for 429s
    assert counters["rate_limited"] > 0  # the gateway did push back, with no limit headers to learn from
    assert result.stats["limits"]["requests_per_minute"] is not None  # found, not told


async def test_first_wave_then_full_concurrency(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(latency_mean_s=0.05)) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=32)
        result = await generate(records(200), cfg, tmp_path, env={"OPENAI_API_KEY": "sk-x"})
        in_flight_max = srv.counters()["in_flight_max"]
    assert result.succeeded == 200
    assert in_flight_max > FIRST_WAVE  # the wave opened to the full window after the first answer


# ---- exit codes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reason", "succeeded", "failed", "code"),
    [
        ("completed", 100, 0, 0),
        ("completed", 95, 5, 0),  # 5% <= 10%
        ("completed", 80, 20, 4),  # 20% > 10%
        ("completed", 0, 7, 4),  # every request failed
        ("budget", 50, 0, 3),
        ("max_requests", 50, 0, 3),
        ("max_total_tokens", 50, 0, 3),
        ("max_tokens", 50, 0, 3),  # a stats.json written before the rename
        ("budget", 0, 9, 4),  # failing matters more than the cap
        ("interrupted", 5, 0, 130),
        ("quota", 0, 0, 4),
        ("circuit_breaker", 3, 0, 4),
    ],
)
def test_exit_code_table(reason: str, succeeded: int, failed: int, code: int) -> None:
    summary = {"stop_reason": reason, "run": {"succeeded": succeeded, "failed": failed, "rejected": 0}}
    got, why = run_exit(summary, 0.1)
    assert got == code
    assert (why is None) == (code == 0)


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_exits_4_when_a_gateway_says_the_quota_is_gone(tmp_path: Path) -> None:
    with FakeServer(FakeOptions(gateway=True, insufficient_quota=True)) as srv:
        env = {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": srv.base_url}
        code, text = _cli(env, "run", "-s", SAMPLE, "--n", "30", "-o", str(tmp_path / "run"))
    assert code == 4, text
    assert "quota" in text


def test_cli_exits_3_on_a_cap_and_4_over_max_failure_rate(tmp_path: Path) -> None:
    with FakeServer() as srv:
        env = {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": srv.base_url}
        args = ("run", "-s", SAMPLE, "--n", "30", "--max-requests", "10", "-o", str(tmp_path / "a"))
        code, text = _cli(env, *args)
        assert code == 3, text
        assert stats(tmp_path / "a")["stop_reason"] == "max_requests"
    with FakeServer(FakeOptions(error_rate_500=1.0)) as srv:
        env = {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": srv.base_url}
        args = ("run", "-s", SAMPLE, "--n", "30", "--max-attempts", "1", "-o", str(tmp_path / "b"))
        code, text = _cli(env, *args)
    assert code == 4, text  # every request failed (here: the circuit breaker stops it first)
