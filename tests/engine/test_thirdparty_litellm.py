"""tracegen through a server nobody here wrote: LiteLLM's proxy, on loopback, offline.

The proxy serves a mocked model (``mock_response``) and, as a real gateway, two models in front of our fake
server -- one healthy, one whose account has no credit (LiteLLM rewrites that 429 to ``code: "429", type:
"throttling_error"``). Marked ``thirdparty`` and skipped unless LiteLLM's proxy is installed::

    python3 -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]'   # ~750 MB, ~1 min
    TRACEGEN_LITELLM=/tmp/litellm/bin/litellm python3 -m pytest -q -m thirdparty

(a separate environment keeps LiteLLM's pins away from tracegen's own dependencies).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracegen.config import RunConfig
from tracegen.engine import generate
from tracegen.engine.runner import FIRST_WAVE
from tracegen.errors import AuthError, FailingRunError, QuotaError
from tracegen.records import Record
from tracegen.testing import FakeOptions, FakeServer

pytestmark = pytest.mark.thirdparty

LITELLM = os.environ.get("TRACEGEN_LITELLM") or shutil.which("litellm")
if not LITELLM:
    pytest.skip(
        "LiteLLM's proxy is not installed: pip install 'litellm[proxy]' (best in its own venv) and set "
        "TRACEGEN_LITELLM to its `litellm` executable to run the third-party gateway tests",
        allow_module_level=True,
    )

MASTER_KEY = "sk-tracegen-gateway-test-0123456789abcdef"
CONFIG = """\
model_list:
  - model_name: mocked
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-upstream
      mock_response: "A mocked explanation, step by step."
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-upstream
      api_base: {healthy}
  - model_name: broke
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-upstream
      api_base: {broke}
router_settings:
  num_retries: 0
litellm_settings:
  num_retries: 0
  telemetry: false
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Gateway:
    def __init__(self, base_url: str, healthy: FakeServer, broke: FakeServer) -> None:
        self.base_url = base_url
        self.healthy = healthy
        self.broke = broke


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    assert LITELLM is not None
    work: Path = tmp_path_factory.mktemp("litellm")
    with FakeServer() as healthy, FakeServer(FakeOptions(insufficient_quota=True)) as broke:
        (work / "config.yaml").write_text(CONFIG.format(healthy=healthy.base_url, broke=broke.base_url))
        port = _free_port()
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        log = open(work / "proxy.log", "wb")  # noqa: SIM115 - closed below, after the process
        cmd = [LITELLM, "--config", str(work / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"LiteLLM's proxy did not start; see {work / 'proxy.log'}")
                    time.sleep(0.5)
            yield Gateway(f"http://127.0.0.1:{port}/v1", healthy, broke)
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            if proc.poll() is None:
                proc.kill()
            log.close()


def records(n: int) -> list[Record]:
    return [Record(id=f"l.{i}", submix="cot", question=f"Through the gateway {i}?") for i in range(n)]


KEY = {"OPENAI_API_KEY": MASTER_KEY}


@pytest.mark.parametrize("transport", ["http", "aiohttp", "sdk"])
async def test_mocked_model_through_the_proxy(gateway: Gateway, tmp_path: Path, transport: str) -> None:
    cfg = RunConfig(base_url=gateway.base_url, model="mocked", concurrency=8, transport=transport)  # type: ignore[arg-type]
    result = await generate(records(12), cfg, tmp_path, env=KEY, total=12)
    assert (result.succeeded, result.failed, result.stop_reason) == (12, 0, "completed")


async def test_the_proxy_as_a_gateway_in_front_of_the_fake_server(gateway: Gateway, tmp_path: Path) -> None:
    before = len(gateway.healthy.ledger())
    cfg = RunConfig(base_url=gateway.base_url, model="gpt-4o-mini", concurrency=8)
    result = await generate(records(12), cfg, tmp_path, env=KEY)
    assert (result.succeeded, result.failed) == (12, 0)
    assert len(gateway.healthy.ledger()) - before == 12  # billed upstream once each


async def test_quota_rewritten_by_litellm_stops_the_run(gateway: Gateway, tmp_path: Path) -> None:
    before = gateway.broke.counters()["requests"]
    cfg = RunConfig(base_url=gateway.base_url, model="broke", concurrency=32)
    with pytest.raises(QuotaError) as info:
        await generate(records(60), cfg, tmp_path, env=KEY)
    assert gateway.broke.counters()["requests"] - before <= FIRST_WAVE
    assert "exceeded your current quota" in str(info.value)


async def test_a_wrong_key_on_the_proxy_stops_the_run(gateway: Gateway, tmp_path: Path) -> None:
    cfg = RunConfig(base_url=gateway.base_url, model="mocked", concurrency=32)
    with pytest.raises((AuthError, FailingRunError)) as info:  # 401, or 400 "No connected db." without a DB
        await generate(records(200), cfg, tmp_path, env={"OPENAI_API_KEY": "sk-wrong-key"})
    assert "sk-wrong-key" not in str(info.value)
