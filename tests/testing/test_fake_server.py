"""The fake OpenAI server, driven through the real openai SDK and through aiohttp."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import openai
import pytest
from multidict import CIMultiDict

import tracegen.testing
from tracegen.errors import ConfigError
from tracegen.planning.tokens import count_chat_tokens, count_text_tokens, encoding_for_model, pricing_for
from tracegen.testing import FakeOptions, FakeServer, request_key
from tracegen.testing.app import FakeState
from tracegen.testing.content import INTRO, tape_for
from tracegen.testing.fake_openai import build_parser, options_from_args
from tracegen.testing.ratelimit import RateLimiter, format_duration
from tracegen.testing.server import options_to_argv

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are an AI assistant. Think step-by-step and justify your steps."},
    {"role": "user", "content": "Is 17 a prime number? Answer yes or no."},
]


@contextmanager
def fake(**options: Any) -> Iterator[FakeServer]:
    with FakeServer(FakeOptions(**options)) as srv:
        yield srv


def sdk(srv: FakeServer, api_key: str = "sk-test", **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0, **kwargs)


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": MODEL,
        "messages": MESSAGES,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 512,
    }
    out.update(overrides)
    return out


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(
    session: aiohttp.ClientSession, url: str, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, Mapping[str, str], Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(url, data=data, headers=all_headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


# --- public API and options ---------------------------------------------------------------------------


def test_public_api_is_pinned() -> None:
    assert tracegen.testing.__all__ == ["FakeOptions", "FakeServer", "build_app", "request_key", "serve"]


def test_options_are_validated_and_hide_the_key() -> None:
    with pytest.raises(ConfigError, match="error_rate_500"):
        FakeOptions(error_rate_500=1.5)
    with pytest.raises(ConfigError, match="sum must be at most 1"):
        FakeOptions(error_rate_500=0.6, drop_rate=0.6)
    with pytest.raises(ConfigError, match="ratelimit_mode"):
        FakeOptions(ratelimit_mode="hourly")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="requests_per_minute"):
        FakeOptions(requests_per_minute=0)
    with pytest.raises(ConfigError, match="unknown option"):
        FakeOptions.from_dict({"latency_ms": 5})
    with pytest.raises(ConfigError, match="whole number"):
        FakeOptions(requests_per_minute=0.5)  # type: ignore[arg-type]
    coerced = FakeOptions(requests_per_minute=600.0, tokens_per_minute=9e4)  # type: ignore[arg-type]
    assert coerced.requests_per_minute == 600 and isinstance(coerced.tokens_per_minute, int)
    opts = FakeOptions(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(opts)
    assert "sk-very-secret" not in json.dumps(opts.to_dict())


def test_command_line_flags_round_trip_every_option() -> None:
    opts = FakeOptions(
        latency_mean_s=0.25,
        latency_distribution="normal",
        requests_per_minute=500,
        ratelimit_mode="per_second",
        error_rate_503=0.1,
        insufficient_quota=True,
        known_models=("gpt-4o", "gpt-4o-mini"),
        batch_expire=True,
        seed=7,
        api_key="sk-secret",
    )
    argv = options_to_argv(opts)
    assert not any("sk-secret" in arg for arg in argv)  # the key travels in the environment
    parsed = options_from_args(build_parser().parse_args(argv))
    assert parsed == opts.replace(api_key=None)


def test_request_key_is_sha256_of_canonical_json() -> None:
    b = body()
    subset = {k: b[k] for k in ("model", "messages", "temperature", "top_p", "max_tokens")}
    expected = hashlib.sha256(
        json.dumps(subset, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert request_key(b) == expected
    assert request_key(dict(reversed(list(b.items())))) == expected  # key order does not matter
    assert request_key({**b, "n": 1, "seed": 3}) == expected  # only the five fields count
    assert request_key(body(temperature=0.0)) != expected
    # a reasoning body (max_completion_tokens, no sampling parameters): the hash of exactly what is sent
    reasoning = {"model": "o3", "messages": b["messages"], "max_completion_tokens": 512}
    sent = json.dumps(reasoning, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert request_key({**reasoning, "n": 1}) == hashlib.sha256(sent).hexdigest()


# --- answers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_answers_have_exactly_the_token_count_they_claim(encoding: str) -> None:
    tape = tape_for(encoding)
    rng = random.Random(encoding)
    lengths = [*range(1, 40), 120, 500, 4096, *(rng.randint(1, 3000) for _ in range(150))]
    for n in lengths:
        for complete in (True, False):
            answer = tape.answer(n, complete=complete, draw=rng.getrandbits(64))
            assert answer.completion_tokens == n
            assert count_text_tokens(answer.content, encoding) == n, (n, complete, answer.content[-60:])
            assert answer.finish_reason == ("stop" if complete else "length")
            if n >= tape.intro_tokens + 1:
                assert answer.content.startswith(INTRO)
            if complete and n > tape.intro_tokens:
                assert answer.content.endswith(".")
    # longer than the whole tape: wraps around and stays exact
    long = tape.answer(200_000, complete=True, draw=5)
    assert count_text_tokens(long.content, encoding) == 200_000


async def test_chat_completion_wire_format_and_usage_through_the_sdk() -> None:
    with fake(seed=3) as srv:
        client = sdk(srv)
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, temperature=0.7, top_p=1.0, max_tokens=512
        )
        completion = raw.parse()
        assert raw.headers["x-request-id"].startswith("req_")
        assert completion.id.startswith("chatcmpl-")
        assert completion.object == "chat.completion"
        assert completion.model == f"tracegen-fake:{MODEL}"
        assert len(completion.choices) == 1
        choice = completion.choices[0]
        assert choice.index == 0 and choice.message.role == "assistant"
        content = choice.message.content or ""
        assert content.startswith("[tracegen-fake]")
        encoding = encoding_for_model(MODEL)
        usage = completion.usage
        assert usage is not None
        assert usage.prompt_tokens == count_chat_tokens(MESSAGES, encoding)
        assert usage.completion_tokens == count_text_tokens(content, encoding)
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert choice.finish_reason == "stop"  # mean 120 * 1.5 < 512

        again = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=512)
        other = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Something else entirely?"}],
            max_tokens=512,
        )
        # deterministic per request content (temperature and top_p are part of it)
        again_same = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0.7, top_p=1.0, max_tokens=512
        )
        assert again_same.choices[0].message.content == content
        assert other.choices[0].message.content != content
        assert again.usage is not None and again.usage.prompt_tokens == usage.prompt_tokens
        await client.close()
        ledger = srv.ledger()
    assert ledger[0]["request_key"] == request_key(body())
    first = ledger[0]
    assert first["model"] == MODEL and first["kind"] == "online" and first["delivered"] is True
    assert first["custom_id"] is None
    assert first["prompt_tokens"] == usage.prompt_tokens
    assert first["completion_tokens"] == usage.completion_tokens
    assert first["cost_usd"] == pytest.approx(
        pricing_for(MODEL).cost_usd(usage.prompt_tokens, usage.completion_tokens)
    )
    with fake(seed=4) as srv:
        client = sdk(srv)
        reseeded = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=0.7, top_p=1.0, max_tokens=512
        )
        await client.close()
    assert reseeded.choices[0].message.content != content


async def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    with fake(mean_completion_tokens=200) as srv:
        client = sdk(srv)
        cut = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7)
        cut2 = await client.chat.completions.create(
            model="gpt-4", messages=MESSAGES, max_completion_tokens=33
        )
        several = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, n=3)
        await client.close()
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 7
    assert count_text_tokens(cut.choices[0].message.content or "", "o200k_base") == 7
    assert cut2.choices[0].finish_reason == "length"
    assert cut2.usage is not None and cut2.usage.completion_tokens == 33
    assert count_text_tokens(cut2.choices[0].message.content or "", "cl100k_base") == 33
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.usage is not None and several.usage.completion_tokens == 120


async def test_route_without_v1_and_custom_id_header(session: aiohttp.ClientSession) -> None:
    with fake() as srv:
        status, _, data = await post(
            session, srv.url + "/chat/completions", body(model="my-local-model"), {"X-Request-Id": "cot.42"}
        )
        ledger = srv.ledger()
    assert status == 200 and data["model"] == "tracegen-fake:my-local-model"
    assert ledger[0]["custom_id"] == "cot.42"
    assert ledger[0]["cost_usd"] == 0.0  # no known price


# --- errors ---------------------------------------------------------------------------------------------


async def test_wrong_key_is_401_and_never_echoed(session: aiohttp.ClientSession) -> None:
    secret, wrong = "sk-the-real-secret-123", "sk-a-wrong-key-456"
    with fake(api_key=secret) as srv:
        client = sdk(srv, api_key=wrong)
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        status, _, data = await post(session, srv.base_url + "/chat/completions", body())  # no header at all
        ok = sdk(srv, api_key=secret)
        good = await ok.chat.completions.create(model=MODEL, messages=MESSAGES)
        await ok.close()
        counters = srv.counters()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    text = json.dumps(info.value.body) + str(info.value)
    assert wrong not in text and secret not in text
    assert status == 401 and data["error"]["type"] == "invalid_request_error"
    assert secret not in json.dumps(data)
    assert good.choices[0].message.content
    assert counters["unauthorized"] == 2 and counters["status"] == {"200": 1, "401": 2}


async def test_insufficient_quota_is_a_429_with_its_own_code() -> None:
    with fake(insufficient_quota=True) as srv:
        client = sdk(srv)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        assert srv.ledger() == []
    assert info.value.code == "insufficient_quota"
    assert "retry-after" not in info.value.response.headers


async def test_bad_requests_are_400_or_404_like_the_real_api(session: aiohttp.ClientSession) -> None:
    with fake(known_models=("gpt-4o-mini",)) as srv:
        client = sdk(srv)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model=MODEL, messages=[])
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as too_long:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=200_000)
        await client.close()
        status, _, data = await post(session, srv.base_url + "/chat/completions", b"{not json")
        status2, _, data2 = await post(session, srv.base_url + "/no/such/route", {})
        assert srv.ledger() == []
    assert bad.value.param == "messages"
    assert missing.value.code == "model_not_found"
    assert too_long.value.code == "context_length_exceeded"
    assert status == 400 and data["error"]["type"] == "invalid_request_error"
    assert status2 == 404 and "Invalid URL" in data2["error"]["message"]


async def test_injected_500_and_503_surface_as_sdk_errors_and_bill_nothing() -> None:
    for option, code in (("error_rate_500", 500), ("error_rate_503", 503)):
        with fake(**{option: 1.0}) as srv:
            client = sdk(srv)
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(model=MODEL, messages=MESSAGES)
            await client.close()
            assert srv.ledger() == []
            counters = srv.counters()
        assert info.value.status_code == code
        assert counters[f"injected_{code}"] == 1 and counters["status"] == {str(code): 1}


async def test_fault_rates_are_seeded_and_roughly_right(session: aiohttp.ClientSession) -> None:
    outcomes: list[list[int]] = []
    for _ in range(2):
        with fake(error_rate_500=0.3, error_rate_503=0.2, seed=11) as srv:
            statuses = []
            for i in range(200):
                status, _, _ = await post(session, srv.base_url + "/chat/completions", body(max_tokens=i + 1))
                statuses.append(status)
            outcomes.append(statuses)
    assert outcomes[0] == outcomes[1]  # same seed, same arrival order: same faults
    assert 40 <= outcomes[0].count(500) <= 80 and 20 <= outcomes[0].count(503) <= 60


async def test_dropped_answer_is_billed_but_not_delivered() -> None:
    with fake(drop_rate=1.0) as srv:
        client = sdk(srv)
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        ledger = srv.ledger()
        counters = srv.counters()
    assert len(ledger) == 1 and ledger[0]["delivered"] is False
    assert ledger[0]["completion_tokens"] > 0 and ledger[0]["cost_usd"] > 0
    assert counters["drops"] == 1 and counters["billed"] == 1 and counters["delivered"] == 0


async def test_timed_out_answer_is_billed_but_not_delivered() -> None:
    with fake(timeout_rate=1.0, hang_s=30.0) as srv:
        client = sdk(srv, timeout=0.3)
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        ledger = srv.ledger()
        counters = srv.counters()
    # leaving the block cut the held request: no 30 s wait
    assert len(ledger) == 1 and ledger[0]["delivered"] is False
    assert counters["timeouts"] == 1


async def test_a_slow_answer_still_arrives_to_a_patient_client() -> None:
    with fake(timeout_rate=1.0, hang_s=0.2) as srv:
        client = sdk(srv, timeout=30.0)
        answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        ledger = srv.ledger()
    assert answer.choices[0].message.content
    assert ledger[0]["delivered"] is True


async def test_latency_draws_follow_the_options() -> None:
    st = FakeState(FakeOptions(latency_mean_s=1.0, latency_jitter_s=0.3))
    draws = [st.latency_s() for _ in range(500)]
    assert all(0.7 <= d <= 1.3 for d in draws) and max(draws) - min(draws) > 0.4
    st.apply(FakeOptions(latency_mean_s=0.1, latency_jitter_s=0.5, latency_distribution="normal"))
    normal = [st.latency_s() for _ in range(500)]
    assert min(normal) == 0.0 and max(normal) > 0.6  # clipped at 0, long tail
    st.apply(FakeOptions(latency_mean_s=0.5, latency_under_load_s=0.01))
    st.counters.in_flight = 101
    assert st.latency_s() == pytest.approx(0.5 + 100 * 0.01)


async def test_max_in_flight_answers_503_when_overloaded(session: aiohttp.ClientSession) -> None:
    with fake(max_in_flight=1, latency_mean_s=1.0) as srv:
        url = srv.base_url + "/chat/completions"
        results = await asyncio.gather(*(post(session, url, body(max_tokens=10 + i)) for i in range(4)))
        counters = srv.counters()
    statuses = sorted(r[0] for r in results)
    assert statuses[0] == 200 and statuses[-1] == 503
    assert counters["overloaded_503"] == statuses.count(503)
    assert counters["in_flight_max"] >= 2 and counters["in_flight"] == 0


# --- rate limits ----------------------------------------------------------------------------------------


async def test_rate_limit_headers_decrease_then_429_with_retry_after(session: aiohttp.ClientSession) -> None:
    with fake(requests_per_minute=4, tokens_per_minute=100_000) as srv:
        url = srv.base_url + "/chat/completions"
        seen = [await post(session, url, body(max_tokens=100)) for _ in range(4)]
        status, headers, data = await post(session, url, body(max_tokens=100))
        client = sdk(srv)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        counters = srv.counters()
        ledger = srv.ledger()
    prompt = count_chat_tokens(MESSAGES, encoding_for_model(MODEL))
    for i, (code, h, _) in enumerate(seen):
        assert code == 200
        assert h["x-ratelimit-limit-requests"] == "4" and h["x-ratelimit-limit-tokens"] == "100000"
        assert h["x-ratelimit-remaining-requests"] == str(3 - i)
        assert h["x-ratelimit-remaining-tokens"] == str(100_000 - (i + 1) * (prompt + 100))
        assert h["x-ratelimit-reset-requests"].endswith("s")
    assert status == 429 and data["error"]["code"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 55 <= int(headers["retry-after"]) <= 60
    assert 55_000 <= int(headers["retry-after-ms"]) <= 60_000
    assert info.value.code == "rate_limit_exceeded"
    assert counters["rate_limited"] == 2 and len(ledger) == 4


async def test_token_limit_counts_prompt_plus_max_tokens(session: aiohttp.ClientSession) -> None:
    prompt = count_chat_tokens(MESSAGES, encoding_for_model(MODEL))
    with fake(tokens_per_minute=3 * (prompt + 300) + 10) as srv:
        url = srv.base_url + "/chat/completions"
        codes = [(await post(session, url, body(max_tokens=300)))[0] for _ in range(4)]
        status, headers, data = await post(session, url, body(max_tokens=10_000))
    assert codes == [200, 200, 200, 429]
    assert status == 429 and "Request too large" in data["error"]["message"]
    assert "retry-after" not in headers  # waiting would not help


async def test_per_second_mode_through_http(session: aiohttp.ClientSession) -> None:
    with fake(requests_per_minute=60, ratelimit_mode="per_second") as srv:  # one request per second
        url = srv.base_url + "/chat/completions"
        first = await post(session, url, body())
        status, headers, data = await post(session, url, body())
    assert first[0] == 200 and first[1]["x-ratelimit-limit-requests"] == "60"
    assert first[1]["x-ratelimit-remaining-requests"] == "0"
    assert status == 429 and data["error"]["code"] == "rate_limit_exceeded"
    assert headers["retry-after"] == "1" and 0 < int(headers["retry-after-ms"]) <= 1000


def test_rolling_window_limiter() -> None:
    lim = RateLimiter(3, None, "rolling", now=0.0)
    assert all(lim.acquire(10, t).admitted for t in (0.0, 1.0, 2.0))
    refused = lim.acquire(10, 3.0)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(57.0)
    assert refused.limited_by == "requests"
    assert lim.headers(3.0)["x-ratelimit-remaining-requests"] == "0"
    assert lim.headers(3.0)["x-ratelimit-reset-requests"] == "59s"
    assert lim.acquire(10, 60.0).admitted  # the request of t=0 has left the window
    tok = RateLimiter(None, 100, "rolling", now=0.0)
    assert tok.acquire(60, 0.0).admitted and tok.acquire(30, 10.0).admitted
    refused = tok.acquire(50, 20.0)
    assert not refused.admitted and refused.limited_by == "tokens"
    assert refused.retry_after_s == pytest.approx(40.0)
    assert tok.headers(20.0)["x-ratelimit-remaining-tokens"] == "10"
    assert tok.acquire(101, 100.0).too_large


def test_per_second_limiter_is_pro_rata() -> None:
    lim = RateLimiter(120, None, "per_second", now=0.0)  # 2 per second
    assert lim.acquire(1, 0.0).admitted and lim.acquire(1, 0.0).admitted
    refused = lim.acquire(1, 0.0)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(0.5)
    assert lim.headers(0.0)["x-ratelimit-remaining-requests"] == "0"
    assert lim.headers(0.0)["x-ratelimit-reset-requests"] == "1s"
    assert lim.acquire(1, 0.5).admitted
    slow = RateLimiter(30, None, "per_second", now=0.0)  # one request every 2 s
    assert slow.acquire(1, 0.0).admitted
    assert not slow.acquire(1, 1.0).admitted
    assert slow.acquire(1, 2.0).admitted
    admitted = [2.0 + t / 4 for t in range(1, 241) if slow.acquire(1, 2.0 + t / 4).admitted]
    assert admitted == [4.0 + 2 * i for i in range(30)]  # the next 60 s at 30 RPM: one every 2 s


def test_durations_are_spelled_like_openai() -> None:
    assert format_duration(0.02) == "20ms"
    assert format_duration(1.0) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360.0) == "6m0s"
    assert format_duration(3600.0) == "1h0m0s"
    assert format_duration(0.0) == "0s"


# --- ledger, counters, reset, subprocess ----------------------------------------------------------------


async def test_admin_endpoints_and_reset(session: aiohttp.ClientSession) -> None:
    with fake() as srv:
        await post(session, srv.base_url + "/chat/completions", body())
        async with session.get(srv.url + "/_fake/ledger") as resp:
            ledger = await resp.json()
        async with session.get(srv.url + "/_fake/counters") as resp:
            counters = await resp.json()
        assert ledger == srv.ledger() and len(ledger) == 1
        assert counters["status"] == {"200": 1} and counters["billed"] == 1
        srv.reset()
        assert srv.ledger() == [] and srv.counters()["requests"] == 0
        srv.update(insufficient_quota=True)
        status, _, _ = await post(session, srv.base_url + "/chat/completions", body())
        with pytest.raises(ConfigError, match="drop_rate"):
            srv.update(drop_rate=2.0)
    assert status == 429


async def test_subprocess_server_has_the_same_api() -> None:
    with FakeServer(FakeOptions(api_key="sk-child", seed=5), subprocess=True) as srv:
        assert srv.base_url.endswith("/v1")
        client = sdk(srv, api_key="sk-child")
        answer = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"X-Request-Id": "flan.1"}
        )
        with pytest.raises(openai.AuthenticationError):
            await sdk(srv, api_key="sk-wrong").chat.completions.create(model=MODEL, messages=MESSAGES)
        await client.close()
        ledger = srv.ledger()
        counters = srv.counters()
        srv.reset()
        assert srv.ledger() == []
    assert answer.model == f"tracegen-fake:{MODEL}"
    assert ledger[0]["custom_id"] == "flan.1" and ledger[0]["delivered"] is True
    assert counters["status"] == {"200": 1, "401": 1}


# --- Files and Batch API ----------------------------------------------------------------------------------


def batch_lines(n: int, *, model: str = MODEL) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"cot.{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body(
                model=model, messages=[{"role": "user", "content": f"What is {i} + {i}?"}], max_tokens=300
            ),
        }
        for i in range(n)
    ]


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


async def submit(client: openai.AsyncOpenAI, data: bytes) -> str:
    uploaded = await client.files.create(file=("requests.jsonl", data, "application/jsonl"), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


async def wait_for(client: openai.AsyncOpenAI, batch_id: str, *final: str) -> tuple[Any, list[str]]:
    statuses: list[str] = []
    for _ in range(2000):
        batch = await client.batches.retrieve(batch_id)
        if not statuses or statuses[-1] != batch.status:
            statuses.append(batch.status)
        if batch.status in final:
            return batch, statuses
        await asyncio.sleep(0.01)
    raise AssertionError(f"batch stuck in {statuses}")


async def read_jsonl(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


async def test_batch_full_lifecycle_through_the_sdk() -> None:
    lines = batch_lines(5)
    with fake(batch_delay_s=0.3) as srv:
        client = sdk(srv)
        uploaded = await client.files.create(
            file=("requests.jsonl", jsonl(lines), "application/jsonl"), purpose="batch"
        )
        assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
        assert (await client.files.retrieve(uploaded.id)).filename == "requests.jsonl"
        assert (await client.files.content(uploaded.id)).content == jsonl(lines)
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "test"},
        )
        assert batch.status == "validating"
        done, statuses = await wait_for(client, batch.id, "completed", "failed")
        outputs = await read_jsonl(client, done.output_file_id)
        second = await submit(client, jsonl(batch_lines(2)))
        await wait_for(client, second, "completed")
        page = await client.batches.list(limit=1)
        everything = [b.id async for b in client.batches.list(limit=1)]
        with pytest.raises(openai.BadRequestError):
            await client.batches.cancel(batch.id)  # already completed
        await client.close()
        ledger = srv.ledger()
    assert statuses[0] == "validating" and statuses[-1] == "completed" and "in_progress" in statuses
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 5, 0)
    assert done.error_file_id is None and done.metadata == {"run": "test"}
    assert done.completed_at is not None and done.in_progress_at is not None
    assert [o["custom_id"] for o in outputs] == [line["custom_id"] for line in lines]
    encoding = encoding_for_model(MODEL)
    for out, line in zip(outputs, lines, strict=True):
        assert out["error"] is None and out["id"].startswith("batch_req_")
        response = out["response"]
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        completion = response["body"]
        assert completion["object"] == "chat.completion" and completion["model"] == f"tracegen-fake:{MODEL}"
        usage = completion["usage"]
        assert usage["prompt_tokens"] == count_chat_tokens(line["body"]["messages"], encoding)
        assert usage["completion_tokens"] == count_text_tokens(
            completion["choices"][0]["message"]["content"], encoding
        )
    assert done.usage is not None
    assert done.usage.input_tokens == sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in outputs)
    batch_entries = [e for e in ledger if e["custom_id"] in {line["custom_id"] for line in lines}][:5]
    assert len(ledger) == 7 and all(e["kind"] == "batch" and e["delivered"] for e in ledger)
    for entry, out in zip(batch_entries, outputs, strict=True):
        usage = out["response"]["body"]["usage"]
        assert entry["request_key"] == request_key(lines[outputs.index(out)]["body"])
        assert entry["cost_usd"] == pytest.approx(
            pricing_for(MODEL, batch=True).cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
        )
    assert page.has_more is True and len(page.data) == 1 and page.data[0].id == second
    assert everything == [second, batch.id]


async def test_batch_line_failures_go_to_the_error_file() -> None:
    lines = batch_lines(4)
    lines[2]["body"] = {"model": MODEL, "max_tokens": 10}  # no messages: a 400 for that line only
    with fake(batch_delay_s=0.0, batch_fail_rate=0.0) as srv:
        client = sdk(srv)
        done, _ = await wait_for(client, await submit(client, jsonl(lines)), "completed")
        outputs = await read_jsonl(client, done.output_file_id)
        errors = await read_jsonl(client, done.error_file_id)
        srv.update(batch_fail_rate=1.0)
        all_failed, _ = await wait_for(client, await submit(client, jsonl(batch_lines(3))), "completed")
        failed_errors = await read_jsonl(client, all_failed.error_file_id)
        await client.close()
        ledger = srv.ledger()
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    assert [o["custom_id"] for o in outputs] == ["cot.0", "cot.1", "cot.3"]
    assert errors[0]["custom_id"] == "cot.2" and errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["param"] == "messages"
    assert all_failed.output_file_id is None and all_failed.request_counts.failed == 3
    assert {e["response"]["status_code"] for e in failed_errors} == {500}
    assert len(ledger) == 3  # failed lines are not billed


async def test_expired_batch_keeps_partial_results() -> None:
    with fake(batch_delay_s=0.1, batch_expire=True, batch_expire_fraction=0.5) as srv:
        client = sdk(srv)
        done, statuses = await wait_for(client, await submit(client, jsonl(batch_lines(6))), "expired")
        outputs = await read_jsonl(client, done.output_file_id)
        errors = await read_jsonl(client, done.error_file_id)
        await client.close()
        ledger = srv.ledger()
    assert statuses[-1] == "expired" and done.expired_at is not None
    assert [o["custom_id"] for o in outputs] == ["cot.0", "cot.1", "cot.2"]
    assert [e["custom_id"] for e in errors] == ["cot.3", "cot.4", "cot.5"]
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in errors)
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 3, 0)
    assert len(ledger) == 3 and all(e["delivered"] for e in ledger)


async def test_cancelled_batch_keeps_what_was_answered() -> None:
    with fake(batch_delay_s=3.0) as srv:
        client = sdk(srv)
        batch_id = await submit(client, jsonl(batch_lines(30)))
        await wait_for(client, batch_id, "in_progress")
        cancelling = await client.batches.cancel(batch_id)
        done, _ = await wait_for(client, batch_id, "cancelled")
        again = await client.batches.cancel(batch_id)  # cancelling twice is harmless
        outputs = await read_jsonl(client, done.output_file_id)
        errors = await read_jsonl(client, done.error_file_id)
        await client.close()
        ledger = srv.ledger()
    assert cancelling.status == "cancelling" and again.status == "cancelled"
    assert done.cancelled_at is not None and done.cancelling_at is not None
    assert len(outputs) + len(errors) == 30 and len(errors) > 0
    assert all(e["error"]["code"] == "batch_cancelled" for e in errors)
    assert done.request_counts.completed == len(outputs) == len(ledger)


async def test_invalid_batch_file_fails_the_batch_with_line_errors() -> None:
    lines = batch_lines(4)
    lines[1]["custom_id"] = "cot.0"  # duplicate
    lines[3]["url"] = "/v1/embeddings"
    data = jsonl(lines[:3]) + b"{not json\n" + jsonl(lines[3:])
    with fake(batch_delay_s=0.0) as srv:
        client = sdk(srv)
        failed, _ = await wait_for(client, await submit(client, data), "failed", "completed")
        empty, _ = await wait_for(client, await submit(client, b"\n"), "failed", "completed")
        uploaded = await client.files.create(
            file=("x.jsonl", jsonl(batch_lines(1)), "application/jsonl"), purpose="batch"
        )
        with pytest.raises(openai.BadRequestError):
            await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/embeddings",
                completion_window="24h",
            )
        with pytest.raises(openai.NotFoundError):
            await client.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
        await client.close()
        assert srv.ledger() == []
    assert failed.status == "failed" and failed.failed_at is not None and failed.errors is not None
    found = {(e.code, e.line) for e in failed.errors.data or []}
    assert found == {("duplicate_custom_id", 2), ("invalid_json_line", 4), ("invalid_url", 5)}
    assert empty.errors is not None and [e.code for e in empty.errors.data or []] == ["empty_file"]
