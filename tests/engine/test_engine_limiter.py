"""The limiter: buckets, awaiting (no polling), header learning, AIMD; then against the fake server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tracegen.config import RunConfig
from tracegen.engine import Limiter, generate
from tracegen.engine.limiter import parse_reset_s
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_rpm_bucket_awaits_refill_and_wake_grants() -> None:
    clock = Clock()
    lim = Limiter(requests_per_minute=60, concurrency=100, clock=clock, headroom=1.0, burst_s=1.0)
    first = await lim.acquire(10)  # bucket starts with one second's share: 1 request
    waiter = asyncio.ensure_future(lim.acquire(10))
    await settle()
    assert not waiter.done()
    clock.t += 0.5
    lim.wake()
    await settle()
    assert not waiter.done()
    clock.t += 0.5
    lim.wake()
    await settle()
    assert waiter.done()
    lim.release(first, 10)
    lim.release(waiter.result(), 10)
    assert lim.in_flight == 0


async def test_waiters_are_woken_by_a_timer_not_polling() -> None:
    # real clock, tiny wait: the timer armed by the limiter grants it (no sleep loop in the limiter)
    lim = Limiter(requests_per_minute=6000, concurrency=1000, headroom=1.0)  # 100/s, 1 s burst
    permits = [await lim.acquire(1) for _ in range(100)]
    nxt = await asyncio.wait_for(lim.acquire(1), timeout=5)
    assert lim.in_flight == 101
    for p in [*permits, nxt]:
        lim.release(p, 1)


async def test_concurrency_cap_waits_for_a_release() -> None:
    lim = Limiter(concurrency=2)
    a = await lim.acquire(1)
    b = await lim.acquire(1)
    c = asyncio.ensure_future(lim.acquire(1))
    await settle()
    assert not c.done()
    lim.release(a, 1)
    await settle()
    assert c.done()
    lim.release(b, 1)
    lim.release(c.result(), 1)


async def test_cancelled_waiter_gives_nothing_away() -> None:
    lim = Limiter(concurrency=1)
    a = await lim.acquire(1)
    c = asyncio.ensure_future(lim.acquire(1))
    await settle()
    c.cancel()
    await settle()
    lim.release(a, 1)
    assert lim.in_flight == 0


async def test_tpm_reserves_and_refunds_without_server_counts() -> None:
    clock = Clock()
    lim = Limiter(
        tokens_per_minute=6000, concurrency=10, clock=clock, headroom=1.0, burst_s=1.0
    )  # 100 tokens/s
    p = await lim.acquire(100)  # the whole second's share
    w = asyncio.ensure_future(lim.acquire(50))
    await settle()
    assert not w.done()
    lim.release(p, used_tokens=40)  # 60 unused tokens come back: enough for 50
    await settle()
    assert w.done()


async def test_no_refund_once_the_server_reports_its_token_count() -> None:
    clock = Clock()
    lim = Limiter(tokens_per_minute=6000, concurrency=10, clock=clock, headroom=1.0, burst_s=1.0)
    p = await lim.acquire(100)
    lim.observe(
        p,
        status=200,
        headers={"x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "0"},
    )
    w = asyncio.ensure_future(lim.acquire(50))
    lim.release(p, used_tokens=40)  # the server counted prompt + max_tokens: no refund
    await settle()
    assert not w.done()
    clock.t += 0.5
    lim.wake()
    await settle()
    assert w.done()


async def test_limits_are_learned_from_headers_and_never_raised_above_the_flag() -> None:
    lim = Limiter(requests_per_minute=1000, concurrency=10)
    assert lim.tokens_per_minute is None
    p = await lim.acquire(10)
    lim.observe(
        p,
        status=200,
        headers={"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "200000"},
    )
    lim.release(p, 10)
    assert lim.requests_per_minute == 500  # the server's lower limit wins
    assert lim.tokens_per_minute == 200000  # learned
    q = await lim.acquire(10)
    lim.observe(q, status=200, headers={"x-ratelimit-limit-requests": "5000"})
    lim.release(q, 10)
    assert lim.requests_per_minute == 1000  # the flag caps what the server allows


async def test_429_pauses_everybody_cuts_the_rate_and_recovers() -> None:
    clock = Clock()
    lim = Limiter(requests_per_minute=6000, concurrency=100, clock=clock)
    p = await lim.acquire(1)
    q = await lim.acquire(1)
    lim.observe(p, status=429, headers={}, retry_after_s=2.0)
    lim.release(p, None)
    assert lim.factor() < 1.0
    cut = lim.factor()
    lim.observe(q, status=429, headers={}, retry_after_s=2.0)  # same burst: no second cut
    lim.release(q, None)
    assert lim.factor() == cut
    w = asyncio.ensure_future(lim.acquire(1))
    await settle()
    assert not w.done()  # paused
    assert lim.state().paused_s > 1.0
    clock.t += 2.5
    lim.wake()
    await settle()
    assert w.done()
    lim.release(w.result(), 1)
    clock.t += 60
    assert lim.factor() == 1.0  # recovered


async def test_overload_shrinks_the_window_when_no_rate_is_known() -> None:
    clock = Clock()
    lim = Limiter(concurrency=100, clock=clock)
    p = await lim.acquire(1)
    lim.observe(p, status=503, headers={})
    lim.release(p, None)
    assert lim.state().window < 100


async def test_remaining_header_corrects_the_bucket_down() -> None:
    clock = Clock()
    lim = Limiter(requests_per_minute=600, concurrency=100, clock=clock, headroom=1.0, burst_s=5.0)
    p = await lim.acquire(1)  # bucket holds 50, 49 left
    lim.observe(p, status=200, headers={"x-ratelimit-remaining-requests": "0"})
    lim.release(p, 1)
    w = asyncio.ensure_future(lim.acquire(1))
    await settle()
    assert not w.done()  # another client used the server's capacity: we wait
    clock.t += 0.2
    lim.wake()
    await settle()
    assert w.done()


def test_parse_reset_durations() -> None:
    assert parse_reset_s("1s") == 1.0
    assert parse_reset_s("6m0s") == 360.0
    assert parse_reset_s("20ms") == 0.02
    assert parse_reset_s("1h2m3.5s") == 3723.5
    assert parse_reset_s("0.5") == 0.5
    assert parse_reset_s("bogus") is None


def _records(n: int) -> list[Record]:
    return [
        Record(id=f"flan.{i}", submix="flan", question=f"Question number {i}: what follows {i}?")
        for i in range(n)
    ]


async def test_limiter_holds_the_fake_servers_rpm_with_few_429s(tmp_path: Path) -> None:
    # 1,200 RPM = 20/s; 90 requests take a few seconds; the limit is learned from the headers
    opts = FakeOptions(requests_per_minute=1200, ratelimit_mode="per_second", mean_completion_tokens=20)
    with FakeServer(opts) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64, max_tokens=64)
        result = await generate(_records(90), cfg, tmp_path / "run")
        counters = srv.counters()
    assert result.succeeded == 90
    assert result.stats["limits"]["requests_per_minute"] == 1200
    n_429 = counters["status"].get("429", counters["status"].get(429, 0))
    assert n_429 <= 3, counters


async def test_limiter_holds_the_fake_servers_tpm_given_on_the_command_line(tmp_path: Path) -> None:
    # ~ 100 tokens per request (prompt + max_tokens); 60,000 TPM = 1,000 tokens/s = ~10 requests/s
    opts = FakeOptions(tokens_per_minute=60000, ratelimit_mode="rolling", mean_completion_tokens=10)
    with FakeServer(opts) as srv:
        cfg = RunConfig(base_url=srv.base_url, concurrency=64, max_tokens=80, tokens_per_minute=60000)
        result = await generate(_records(40), cfg, tmp_path / "run")
        counters = srv.counters()
    assert result.succeeded == 40
    assert result.stats["n_429"] == 0, counters
