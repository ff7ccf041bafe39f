"""Transport benchmark: our two ChatClients and the whole engine against a bare aiohttp loop.

    .venv/bin/python bench/bench_transport.py [--n 20000] [--concurrency 256] [--latency-s 0]
                                              [--in-flight 2048 --in-flight-latency-s 1.0]

The fake server runs in a child process (``FakeServer(subprocess=True)``) so client and server use different
cores. Each row sends ``--n`` chat completions with ``--concurrency`` in flight and reports requests/s,
client CPU per request (process time of this process), the ratio to the bare loop, and errors. The
"in flight" rows hold thousands of requests open at once (server latency) and count spurious timeouts.
Prints a table; nothing is asserted (timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tracegen.config import RunConfig
from tracegen.engine import AiohttpChatClient, ChatClient, Endpoint, SdkChatClient, TeacherCallError, generate
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer


@dataclass
class Row:
    name: str
    n: int
    wall_s: float
    cpu_s: float
    errors: int
    timeouts: int = 0

    @property
    def rps(self) -> float:
        return self.n / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.n * 1e6


def body(i: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are an AI assistant. Provide a detailed answer."},
            {"role": "user", "content": f"Question {i}: what is {i} plus {i}? Explain step by step."},
        ],
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 256,
    }


async def timed(name: str, n: int, run: Callable[[], Awaitable[tuple[int, int]]]) -> Row:
    t0, c0 = time.perf_counter(), time.process_time()
    errors, timeouts = await run()
    return Row(name, n, time.perf_counter() - t0, time.process_time() - c0, errors, timeouts)


async def bare(url: str, n: int, concurrency: int, timeout_s: float) -> tuple[int, int]:
    """The reference: one session, a semaphore, json in and out, nothing else."""
    errors = timeouts = 0
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as session:

        async def one(i: int) -> None:
            nonlocal errors, timeouts
            async with sem:
                try:
                    async with session.post(
                        url + "/chat/completions",
                        data=json.dumps(body(i)).encode(),
                        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
                    ) as resp:
                        data = await resp.read()
                        if resp.status != 200:
                            errors += 1
                        json.loads(data)
                except asyncio.TimeoutError:
                    timeouts += 1
                except aiohttp.ClientError:
                    errors += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return errors, timeouts


async def through_client(client: ChatClient, n: int, concurrency: int) -> tuple[int, int]:
    errors = timeouts = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal errors, timeouts
        async with sem:
            try:
                await client.complete(body(i), f"bench.{i}")
            except TeacherCallError as e:
                if "timed out" in str(e) or "within" in str(e):
                    timeouts += 1
                else:
                    errors += 1

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.aclose()
    return errors, timeouts


async def through_engine(url: str, n: int, concurrency: int, timeout_s: float) -> tuple[int, int]:
    records = (
        Record(id=f"cot.{i}", submix="cot", question=f"Question {i}: what is {i} plus {i}?", prompt_tokens=40)
        for i in range(n)
    )
    cfg = RunConfig(
        base_url=url, concurrency=concurrency, max_tokens=256, budget_usd=1000.0, timeout_s=timeout_s
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = await generate(records, cfg, Path(tmp) / "run", total=n)
    return result.failed + (n - result.succeeded - result.failed), int(result.stats["n_timeouts"])


async def bench(url: str, n: int, concurrency: int, timeout_s: float, label: str) -> list[Row]:
    endpoint = Endpoint(base_url=url, api_key="sk-bench")
    await bare(url, min(n, 2000), concurrency, timeout_s)  # warm up server and client (imports, caches)
    rows = [await timed(f"bare aiohttp loop{label}", n, lambda: bare(url, n, concurrency, timeout_s))]
    rows.append(
        await timed(
            f"tracegen aiohttp client{label}",
            n,
            lambda: through_client(
                AiohttpChatClient(endpoint, concurrency=concurrency, timeout_s=timeout_s), n, concurrency
            ),
        )
    )
    rows.append(
        await timed(
            f"tracegen sdk client{label}",
            n,
            lambda: through_client(
                SdkChatClient(endpoint, concurrency=concurrency, timeout_s=timeout_s), n, concurrency
            ),
        )
    )
    rows.append(
        await timed(
            f"engine (generate, aiohttp){label}", n, lambda: through_engine(url, n, concurrency, timeout_s)
        )
    )
    return rows


def table(rows: list[Row], reference: Row) -> str:
    head = f"{'transport':<44} {'n':>7} {'req/s':>8} {'vs bare':>8} {'CPU us/req':>11}"
    out = [f"{head} {'errors':>7} {'timeouts':>9}"]
    for r in rows:
        out.append(
            f"{r.name:<44} {r.n:>7} {r.rps:>8.0f} {r.rps / reference.rps:>8.2f} {r.cpu_us:>11.0f} "
            f"{r.errors:>7} {r.timeouts:>9}"
        )
    return "\n".join(out)


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="requests per row")
    ap.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    ap.add_argument("--latency-s", type=float, default=0.0, help="fake server latency, seconds")
    ap.add_argument("--in-flight", type=int, default=2048, help="in-flight rows: requests held open at once")
    ap.add_argument("--in-flight-latency-s", type=float, default=1.0, help="latency for the in-flight rows")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="client timeout, seconds")
    args = ap.parse_args(argv)

    with FakeServer(FakeOptions(latency_mean_s=args.latency_s), subprocess=True) as srv:
        rows = await bench(srv.base_url, args.n, args.concurrency, args.timeout_s, "")
    print(f"# {args.n} requests, {args.concurrency} in flight, server latency {args.latency_s:g} s")
    print(table(rows, rows[0]))
    if args.in_flight:
        m = args.in_flight * 3
        with FakeServer(FakeOptions(latency_mean_s=args.in_flight_latency_s), subprocess=True) as srv:
            held = await bench(srv.base_url, m, args.in_flight, args.timeout_s, f" @{args.in_flight}")
        print(f"\n# {m} requests, {args.in_flight} in flight, server latency {args.in_flight_latency_s:g} s")
        print(table(held, held[0]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
