"""Several endpoints as one pool: dispatch, easing off, retiring a dead endpoint, one budget (offline)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tracegen.config import EndpointConfig, RunConfig, load_config
from tracegen.engine import ChatResult, Limiter, TeacherHTTPError, generate
from tracegen.engine.pool import OPEN, EndpointPool, Member, make_pool
from tracegen.engine.runner import FIRST_WAVE
from tracegen.engine.settings import EngineSettings
from tracegen.errors import AuthError, ConfigError
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer

SECRETS = {"KEY_A": "sk-alpha-SECRET-0001", "KEY_B": "sk-beta-SECRET-0002", "KEY_C": "sk-wrong-SECRET-0003"}


def records(n: int) -> list[Record]:
    return [
        Record(id=f"niv.{i}", submix="niv", question=f"Pool question {i}: explain.", target=str(i))
        for i in range(n)
    ]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def pool_config(*endpoints: dict[str, Any], **fields: Any) -> RunConfig:
    return RunConfig(endpoints=[EndpointConfig(**e) for e in endpoints], max_tokens=200, **fields)


def delivered(ledger: list[dict[str, Any]]) -> list[str]:
    return [e["request_key"] for e in ledger if e["delivered"]]


# ---- end to end against several fake servers --------------------------------------------------------------
async def test_requests_flow_to_the_healthy_endpoint_nothing_lost_or_paid_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    healthy = FakeServer(FakeOptions(api_key=SECRETS["KEY_A"]))
    broken = FakeServer(FakeOptions(error_rate_500=1.0, api_key=SECRETS["KEY_B"]))
    locked = FakeServer(FakeOptions(api_key="sk-the-right-one"))
    with healthy as a, broken as b, locked as c:
        cfg = pool_config(
            {"name": "a", "base_url": a.base_url, "api_key_env": "KEY_A", "concurrency": 2},
            {"name": "b", "base_url": b.base_url, "api_key_env": "KEY_B"},
            {"name": "c", "base_url": c.base_url, "api_key_env": "KEY_C"},
            budget_usd=1.0,
            concurrency=8,
        )
        result = await generate(records(80), cfg, tmp_path, sleep=no_sleep, env=SECRETS)
        ledgers = {"a": a.ledger(), "b": b.ledger(), "c": c.ledger()}
        counters = {"b": b.counters(), "c": c.counters()}
    assert result.stop_reason == "completed" and result.succeeded == 80
    traces = lines(tmp_path / "traces.jsonl")
    assert sorted(t["id"] for t in traces) == sorted(r.id for r in records(80))  # nothing lost
    assert ledgers["b"] == [] and ledgers["c"] == []  # 500s and 401s are not billed
    paid = delivered(ledgers["a"])
    assert len(paid) == len(set(paid)) == 80  # every answer paid once
    assert {t["request_key"] for t in traces} == set(paid)
    assert result.total_spent_usd == pytest.approx(sum(e["cost_usd"] for e in ledgers["a"]))
    assert result.total_spent_usd <= 1.0
    assert counters["c"]["requests"] <= 8  # 401: out of the pool (only what was in flight), not a storm
    assert 5 <= counters["b"]["requests"] < 80  # used while a was full, eased off after failures in a row
    by_name = {e["name"]: e for e in result.stats["endpoints"]}
    assert by_name["c"]["state"] == "dead" and "401" in by_name["c"]["dead_reason"]
    assert by_name["b"]["circuit_trips"] >= 1 and by_name["b"]["state"] in ("open", "half_open")
    assert by_name["a"]["succeeded"] == 80
    for secret in SECRETS.values():
        assert secret not in caplog.text
        for path in tmp_path.rglob("*"):
            assert secret.encode() not in path.read_bytes(), path
    assert "endpoint c taken out of the pool" in caplog.text and "$KEY_C" in caplog.text


async def test_low_rpm_endpoint_gets_its_share_and_the_budget_is_one(tmp_path: Path) -> None:
    slow = FakeServer(FakeOptions(requests_per_minute=60))
    fast = FakeServer(FakeOptions(latency_mean_s=0.005))
    with slow as s, fast as f:
        cfg = pool_config(
            {"name": "slow", "base_url": s.base_url, "api_key_env": None, "requests_per_minute": 60},
            {"name": "fast", "base_url": f.base_url, "api_key_env": None},
            budget_usd=0.004,
            concurrency=4,
        )
        result = await generate(records(200), cfg, tmp_path, sleep=no_sleep, env={})
        ledgers = {"slow": s.ledger(), "fast": f.ledger()}
        n_429 = s.counters().get("429", 0)
    assert result.stop_reason == "budget"  # one budget for the whole pool
    keys = delivered(ledgers["slow"]) + delivered(ledgers["fast"])
    assert len(keys) == len(set(keys)) == result.succeeded  # no request paid on two endpoints
    billed = sum(e["cost_usd"] for led in ledgers.values() for e in led)
    assert billed == pytest.approx(result.total_spent_usd) and billed <= 0.004
    assert len(ledgers["fast"]) > len(ledgers["slow"]) >= 1  # capacity was used where it was
    assert n_429 == 0  # the slow endpoint's own limiter kept it under its limit


async def test_all_endpoints_rejecting_their_keys_is_one_auth_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeServer(FakeOptions(api_key="sk-x")) as a, FakeServer(FakeOptions(api_key="sk-y")) as b:
        cfg = pool_config(
            {"name": "a", "base_url": a.base_url, "api_key_env": "KEY_A"},
            {"name": "b", "base_url": b.base_url, "api_key_env": "KEY_B"},
            concurrency=32,
        )
        with pytest.raises(AuthError) as info:
            await generate(records(300), cfg, tmp_path, sleep=no_sleep, env=SECRETS)
        sent = a.counters()["requests"] + b.counters()["requests"]
    assert sent <= 2 * FIRST_WAVE  # the first wave tried each endpoint, then the run stopped
    message = str(info.value)
    assert "$KEY_A" in message and "$KEY_B" in message and "401" in message
    assert all(s not in message and s not in caplog.text for s in SECRETS.values())
    assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "auth"


async def test_missing_key_variable_is_named(tmp_path: Path) -> None:
    cfg = pool_config({"base_url": "http://127.0.0.1:9/v1", "api_key_env": "NOT_SET_ANYWHERE"})
    with pytest.raises(AuthError, match="NOT_SET_ANYWHERE is not set"):
        make_pool(EngineSettings.of(cfg), env={})


async def test_refused_connections_are_eased_off_and_retried_elsewhere(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here: connection refused
    with FakeServer() as a:
        cfg = pool_config(
            {"name": "down", "base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": None},
            {"name": "up", "base_url": a.base_url, "api_key_env": None, "concurrency": 2},
            concurrency=8,
        )
        result = await generate(records(40), cfg, tmp_path, sleep=no_sleep, env={})
        paid = delivered(a.ledger())
    assert result.succeeded == 40 and len(paid) == len(set(paid)) == 40
    down = next(e for e in result.stats["endpoints"] if e["name"] == "down")
    assert down["n_connection_errors"] >= 5 and down["circuit_trips"] >= 1 and down["succeeded"] == 0
    assert result.stats["n_connection_errors"] == down["n_connection_errors"]


# ---- circuit breaker with a fake clock ----------------------------------------------------------------------
class Scripted:
    """A ChatClient answering from a script: "ok" or an HTTP status."""

    def __init__(self, script: list[str | int]) -> None:
        self.script = script
        self.calls = 0

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step != "ok":
            raise TeacherHTTPError(int(step), None, "scripted failure")
        return ChatResult("answer", "stop", 10, 5, "fake", {})

    async def aclose(self) -> None:
        return None


async def test_breaker_opens_cools_down_tries_once_and_closes() -> None:
    now = [0.0]
    flaky = Scripted([500, 500, "ok"])
    pool = EndpointPool(
        [Member("flaky", flaky, Limiter(concurrency=4, clock=lambda: now[0]))],
        failures_to_open=2,
        cooldown_s=10.0,
        clock=lambda: now[0],
    )
    for _ in range(2):
        permit = await pool.acquire(10)
        with pytest.raises(TeacherHTTPError):
            await pool.complete(permit, {}, "r")
        pool.release(permit, None)
    assert pool.members[0].state == OPEN
    waiter = asyncio.ensure_future(pool.acquire(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # cooling down: nothing is sent there
    now[0] = 10.5
    pool.wake()
    trial = await asyncio.wait_for(waiter, 1)
    second = asyncio.ensure_future(pool.acquire(10))
    await asyncio.sleep(0.01)
    assert not second.done()  # half-open: one trial at a time
    await pool.complete(trial, {}, "r")
    pool.release(trial, 15)
    permit = await asyncio.wait_for(second, 1)
    assert pool.members[0].state == "closed"
    pool.release(permit, 0)


async def test_dispatch_prefers_the_endpoint_that_can_admit_soonest() -> None:
    now = [0.0]
    busy = Limiter(requests_per_minute=60, concurrency=8, clock=lambda: now[0], burst_s=1.0)
    free = Limiter(concurrency=8, clock=lambda: now[0])
    pool = EndpointPool(
        [Member("busy", Scripted(["ok"]), busy), Member("free", Scripted(["ok"]), free)], clock=lambda: now[0]
    )
    names = Counter()
    for _ in range(6):
        permit = await pool.acquire(10)
        names[permit.member.name] += 1  # type: ignore[attr-defined]
    assert names["busy"] == 1 and names["free"] == 5  # busy's bucket held one request; the rest went free


# ---- config -------------------------------------------------------------------------------------------------
def test_config_rejects_a_key_in_place_of_its_variable_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("endpoints:\n  - base_url: http://x/v1\n    api_key_env: sk-live-abc123\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "NAME of an environment variable" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("endpoints:\n  - base_url: http://x/v1\n    rpm: 3\n", "known keys: name, base_url"),
        ("requests_per_minute: 10\nendpoints:\n  - base_url: http://x/v1\n", "per endpoint"),
        ("base_url: http://y/v1\nendpoints:\n  - base_url: http://x/v1\n", "either base_url or endpoints"),
        ("model: gpt-4\nendpoints:\n  - base_url: http://x/v1\n    model: gpt-4o\n", "no endpoint serves"),
        ("endpoints:\n  - base_url: http://x/v1\n  - base_url: http://x/v1\n", "unique"),
    ],
)
def test_bad_endpoint_configs_are_named(tmp_path: Path, yaml_text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, env={})


def test_ambient_base_url_does_not_fight_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("endpoints:\n  - base_url: http://x/v1\n")
    cfg = load_config(path, env={"OPENAI_BASE_URL": "http://elsewhere/v1"})
    assert cfg.base_url is None and cfg.endpoints[0].base_url == "http://x/v1"


def test_public_config_redacts_endpoint_urls() -> None:
    cfg = pool_config({"base_url": "https://x.example/v1?key=abcSECRET"})
    public = json.dumps(cfg.public_dict())
    assert "abcSECRET" not in public and "x.example" in public


# ---- Azure URL shape ---------------------------------------------------------------------------------------
async def test_azure_endpoint_uses_deployment_url_and_api_key_header(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append((request.path_qs, request.headers.get("api-key"), request.headers.get("Authorization")))
        return web.json_response(
            {
                "model": "gpt-4",
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        )

    app = web.Application()
    app.router.add_post("/openai/deployments/{name}/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        cfg = pool_config(
            {
                "base_url": f"http://127.0.0.1:{port}",
                "api_key_env": "AZ_KEY",
                "azure_deployment": "gpt4-east",
                "api_version": "2024-10-21",
            },
            model="gpt-4",
        )
        result = await generate(records(3), cfg, tmp_path, env={"AZ_KEY": "azure-secret"})
    finally:
        await runner.cleanup()
    assert result.succeeded == 3
    assert seen[0] == (
        "/openai/deployments/gpt4-east/chat/completions?api-version=2024-10-21",
        "azure-secret",
        None,
    )


def test_endpoints_example_rehearses_over_one_fake_server_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from tracegen.cli import app

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out = tmp_path / "run"
    args = ["run", "-c", "examples/endpoints.yaml", "--rehearse", "--n", "30", "-o", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    assert [e["name"] for e in stats["endpoints"]] == ["openai", "azure-east", "local"]
    assert sum(e["succeeded"] for e in stats["endpoints"]) == stats["succeeded"] == 30
    assert stats["config"]["endpoints"][1]["api_key_env"] == "AZURE_EAST_KEY"


def test_endpoints_from_the_environment_are_json() -> None:
    env = {"TRACEGEN_ENDPOINTS": '[{"name": "e1", "base_url": "http://x/v1", "api_key_env": "K1"}]'}
    cfg = load_config(None, env=env)
    assert cfg.endpoints[0].api_key_env == "K1"
    with pytest.raises(ConfigError, match="TRACEGEN_ENDPOINTS: not valid JSON"):
        load_config(None, env={"TRACEGEN_ENDPOINTS": "http://x/v1"})
