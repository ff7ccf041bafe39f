"""Running the fake server: in a background thread, in a child process, or blocking (``serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess as sp
import sys
import threading
import urllib.request
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from ..errors import ConfigError
from .app import STATE, FakeState, build_app
from .options import API_KEY_ENV, FakeOptions

__all__ = ["FakeServer", "options_to_argv", "serve"]

_T = TypeVar("_T")
_SHUTDOWN_TIMEOUT_S = 2.0
_START_TIMEOUT_S = 60.0
#: First line the command-line server prints; the rest of the line is its base URL.
READY_PREFIX = "tracegen fake server listening on "


async def _start(opts: FakeOptions, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        build_app(opts), access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port  # the real port when port is 0
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}/v1"


def serve(
    options: FakeOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM (blocking); ``on_ready(base_url)`` is called once listening."""
    opts = options or FakeOptions()

    async def main() -> None:
        runner, base_url = await _start(opts, host, port)
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still works
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if on_ready is not None:
            on_ready(base_url)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def options_to_argv(opts: FakeOptions) -> list[str]:
    """Command-line flags reproducing ``opts`` (all but ``api_key``, which travels in the environment)."""
    argv: list[str] = []
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        if f.name == "api_key" or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, ",".join(value)]
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


class FakeServer:
    """The fake OpenAI server on 127.0.0.1 and a free port, as a context manager.

    ``FakeServer(opts)`` runs it on its own event loop in a daemon thread; ``FakeServer(opts,
    subprocess=True)`` runs ``python -m tracegen.testing.fake_openai`` in a child process (so a benchmark's
    client and server use different cores) and reads the ledger and counters over HTTP.
    """

    def __init__(
        self,
        options: FakeOptions | None = None,
        *,
        subprocess: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.options = options or FakeOptions()
        self.subprocess = subprocess
        self.host = host
        self._port = port
        self._base_url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._proc: sp.Popen[str] | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> FakeServer:
        """Start serving; returns self once the server accepts connections."""
        if self._base_url is not None:
            return self
        if self.subprocess:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner, self._base_url = loop.run_until_complete(
                    _start(self.options, self.host, self._port)
                )
            except BaseException as e:  # reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="tracegen-fake-openai", daemon=True)
        self._thread.start()
        ready.wait(_START_TIMEOUT_S)
        if failure:
            self._loop = self._thread = None
            raise ConfigError(
                f"the fake server cannot listen on {self.host}:{self._port}: {failure[0]}; pick another port"
            ) from failure[0]

    def _start_process(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "tracegen.testing.fake_openai",
            "--host",
            self.host,
            "--port",
            str(self._port),
            *options_to_argv(self.options),
        ]
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self.options.api_key is not None:
            env[API_KEY_ENV] = self.options.api_key
        self._proc = sp.Popen(argv, stdout=sp.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self._proc.kill()
            self._proc.wait()
            raise ConfigError(
                f"the fake server child process did not start (exit code {self._proc.returncode}); "
                f"run {' '.join(argv[1:4])} --port 0 by hand to see why"
            )
        self._base_url = line[len(READY_PREFIX) :].strip()

    def stop(self) -> None:
        """Stop serving (requests still held open are cut)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.terminate()
            try:
                proc.wait(10)
            except sp.TimeoutExpired:  # pragma: no cover - the child ignores SIGTERM only if wedged
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._loop is not None and self._thread is not None:
            loop, thread, runner = self._loop, self._thread, self._runner
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(_SHUTDOWN_TIMEOUT_S + 10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            self._loop = self._thread = self._runner = None
        self._base_url = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- addresses ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what an OpenAI client takes as ``base_url``."""
        if self._base_url is None:
            raise RuntimeError("the fake server is not running: use `with FakeServer(...) as srv:`")
        return self._base_url

    @property
    def url(self) -> str:
        """The server root (``base_url`` without ``/v1``), where ``/_fake/...`` lives."""
        return self.base_url.removesuffix("/v1")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # --- inspection -----------------------------------------------------------------------------------
    def _on_loop(self, fn: Callable[[FakeState], _T]) -> _T:
        loop, runner = self._loop, self._runner
        assert loop is not None and runner is not None

        async def call() -> _T:
            return fn(runner.app[STATE])

        coro: Coroutine[Any, Any, _T] = call()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    def _http(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def ledger(self) -> list[dict[str, Any]]:
        """Every billed answer (request_key, model, tokens, cost_usd, delivered, custom_id, kind)."""
        if self._proc is not None:
            result: list[dict[str, Any]] = self._http("GET", "/_fake/ledger")
            return result
        return self._on_loop(lambda st: st.ledger.snapshot())

    def counters(self) -> dict[str, Any]:
        """Totals: requests, status codes, 429s, injected faults, in-flight max, billed tokens and cost."""
        if self._proc is not None:
            result: dict[str, Any] = self._http("GET", "/_fake/counters")
            return result
        return self._on_loop(lambda st: st.counters.snapshot(st.ledger))

    def reset(self) -> None:
        """Forget ledger, counters, rate-limit windows, files and batches."""
        if self._proc is not None:
            self._http("POST", "/_fake/reset", {})
            return
        self._on_loop(lambda st: st.reset())

    def update(self, **changes: Any) -> FakeOptions:
        """Change options while running (e.g. ``insufficient_quota=True``); returns the new options."""
        self.options = self.options.replace(**changes)
        if self._proc is not None:
            self._http("POST", "/_fake/options", changes)
        else:
            new = self.options
            self._on_loop(lambda st: st.apply(new))
        return self.options
