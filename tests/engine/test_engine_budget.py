"""The hard dollar budget: reservations, leases, crash accounting; a property test against the fake server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracegen.config import RunConfig
from tracegen.engine import Budget, generate
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer


def test_reserve_settle_release_and_unknown() -> None:
    b = Budget(budget_usd=1.0)
    r1 = b.try_reserve(0.4, 100)
    r2 = b.try_reserve(0.4, 100)
    assert r1 is not None and r2 is not None
    assert b.try_reserve(0.4, 100) is None  # would exceed with the two in flight...
    assert b.exhausted is None  # ...but may fit once they settle
    b.settle(r1, 0.1, 50)
    b.release(r2)  # error answer: not billed
    assert b.spent_usd == 0.1
    r3 = b.try_reserve(0.4, 100)
    assert r3 is not None
    b.charge_unknown(r3)  # timed out after sending: stays charged
    assert abs(b.spent_usd - 0.5) < 1e-12
    assert abs(b.unknown_usd - 0.4) < 1e-12
    assert b.try_reserve(0.6, 100) is None
    assert b.exhausted == "budget"  # cannot fit even with nothing in flight


def test_caps_on_requests_and_tokens() -> None:
    b = Budget(budget_usd=None, max_requests=2)
    assert b.try_reserve(0.0, 10) and b.try_reserve(0.0, 10)
    assert b.try_reserve(0.0, 10) is None
    assert b.exhausted == "max_requests"
    assert b.try_reserve(0.0, 10, new_request=False) is not None  # retries of records in flight go on
    t = Budget(budget_usd=None, max_total_tokens=100)
    r = t.try_reserve(0.0, 80)
    assert r is not None
    t.settle(r, 0.0, 30)
    assert t.try_reserve(0.0, 80) is None
    assert t.exhausted == "max_total_tokens"


async def test_reserve_awaits_requests_in_flight() -> None:
    b = Budget(budget_usd=1.0)
    r1 = b.try_reserve(0.8, 10)
    assert r1 is not None
    waiter = asyncio.ensure_future(b.reserve(0.5, 10))
    await asyncio.sleep(0)
    assert not waiter.done()
    b.settle(r1, 0.2, 5)  # the answer cost less than its worst case: room for the waiter
    assert await asyncio.wait_for(waiter, 1) is not None


def test_leases_are_durable_and_a_crash_charges_them(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    b = Budget.open(ledger, budget_usd=10.0)
    r = b.try_reserve(0.01, 10)
    assert r is not None
    leases = [json.loads(x) for x in ledger.read_text().splitlines() if '"lease"' in x]
    assert leases and leases[-1]["leased_usd"] >= 0.01  # written before the reservation was granted
    b.settle(r, 0.004, 5)
    # kill -9 here: no close line. The next session charges everything leased.
    leased = b.leased_usd
    b2 = Budget.open(ledger, budget_usd=10.0)
    assert b2.prior_spent_usd == leased
    b2.close()
    b3 = Budget.open(ledger, budget_usd=10.0)
    assert b3.prior_spent_usd == leased  # the closed session spent 0


def test_clean_close_returns_the_unused_lease(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    b = Budget.open(ledger, budget_usd=10.0)
    r = b.try_reserve(0.05, 10)
    assert r is not None
    b.settle(r, 0.02, 5)
    b.close()
    again = Budget.open(ledger, budget_usd=10.0)
    assert abs(again.prior_spent_usd - 0.02) < 1e-12
    with ledger.open("ab") as f:
        f.write(b'{"event": "lease", "sess')  # torn line from a crash mid-write
    again2 = Budget.open(ledger, budget_usd=10.0)
    assert abs(again2.prior_spent_usd - 0.02) < 1e-12
    assert ledger.read_bytes().endswith(b"\n")


def test_trace_costs_floor_prior_spend(tmp_path: Path) -> None:
    b = Budget.open(tmp_path / "ledger.jsonl", budget_usd=1.0, trace_cost_usd=0.3)
    assert b.prior_spent_usd == 0.3


def test_the_budget_never_leases_past_the_limit(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    b = Budget.open(ledger, budget_usd=0.05)
    held = []
    while (r := b.try_reserve(0.003, 10)) is not None:
        held.append(r)
    assert b.leased_usd <= 0.05 + 1e-12
    assert b.committed_usd <= 0.05 + 1e-12
    for r in held:
        b.charge_unknown(r)
    b2 = Budget.open(ledger, budget_usd=0.05)  # crashed: charged at the lease, still within the budget
    assert b2.prior_spent_usd <= 0.05 + 1e-12


# ---- property: spend never exceeds the budget (the fake server's own ledger) ----------------------------

_SERVER: FakeServer | None = None


def _server() -> FakeServer:
    global _SERVER
    if _SERVER is None:
        _SERVER = FakeServer(FakeOptions(hang_s=0.6)).start()
    return _SERVER


def teardown_module() -> None:
    if _SERVER is not None:
        _SERVER.stop()


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mean_tokens=st.integers(5, 400),
    spread=st.floats(0.0, 1.0),
    max_tokens=st.integers(16, 600),
    timeout_rate=st.sampled_from([0.0, 0.05, 0.2]),
    drop_rate=st.sampled_from([0.0, 0.05]),
    error_rate_500=st.sampled_from([0.0, 0.1]),
    budget_usd=st.floats(0.002, 0.03),
    seed=st.integers(0, 1000),
)
def test_spend_never_exceeds_budget_under_concurrency_and_faults(
    tmp_path_factory: object,
    mean_tokens: int,
    spread: float,
    max_tokens: int,
    timeout_rate: float,
    drop_rate: float,
    error_rate_500: float,
    budget_usd: float,
    seed: int,
) -> None:
    srv = _server()
    srv.reset()
    srv.update(
        mean_completion_tokens=mean_tokens,
        completion_tokens_spread=spread,
        timeout_rate=timeout_rate,
        drop_rate=drop_rate,
        error_rate_500=error_rate_500,
        seed=seed,
    )
    import tempfile

    run_dir = Path(tempfile.mkdtemp(prefix="budget-prop-"))
    records = [
        Record(id=f"niv.{i}", submix="niv", question=f"Task {seed}-{i}: " + "word " * (i % 50))
        for i in range(600)
    ]
    cfg = RunConfig(
        base_url=srv.base_url,
        model="gpt-4o-mini",
        max_tokens=max_tokens,
        budget_usd=budget_usd,
        concurrency=300,
        timeout_s=0.3,
        max_attempts=3,
    )

    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    result = asyncio.run(generate(records, cfg, run_dir, sleep=no_sleep))
    billed = sum(e["cost_usd"] for e in srv.ledger())
    assert billed <= budget_usd + 1e-12, (billed, budget_usd, result.stats)
    assert result.total_spent_usd <= budget_usd + 1e-12
    assert billed <= result.total_spent_usd + 1e-12  # our books never under-count what was billed
    if result.stop_reason == "completed":
        assert result.succeeded + result.failed == len(records)
    else:
        assert result.stop_reason == "budget"
