"""The engine's per-request shortcuts keep their behaviour: the http transport's deadline queue times out
each request that passes its deadline (and only those), the writer's commit interval never delays close,
and a line's callback (the online engine counts answers with it) comes only once the line is durable."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from tracegen.engine import RunDir
from tracegen.engine import store as store_mod
from tracegen.engine.client import Endpoint
from tracegen.engine.client_http import HttpChatClient
from tracegen.engine.store import REJECTED, TRACES, ResultWriter
from tracegen.errors import RunDirError, TeacherTimeout

ANSWER = (
    b'{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}'
)


def _reply(body: bytes = ANSWER) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def test_the_deadline_queue_times_out_only_the_requests_that_stall() -> None:
    """Requests answered at once, one that stalls, then more answered at once: only the stalled one
    times out, at its own deadline, and the client keeps working after it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))[15:])
            body = await reader.readexactly(length)
            if b"stall" in body:
                await asyncio.sleep(3)
                writer.close()
                return
            writer.write(_reply())
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = HttpChatClient(
        Endpoint(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-x"), concurrency=4, timeout_s=0.4
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    stalled = {"model": "m", "messages": [{"role": "user", "content": "stall"}]}
    loop = asyncio.get_running_loop()
    try:
        assert (await c.complete(body, "a")).content == "hi"
        t0 = loop.time()
        slow = asyncio.ensure_future(c.complete(stalled, "s"))
        fast = [await c.complete(body, f"f{i}") for i in range(5)]  # queued behind the stalled deadline
        assert all(r.content == "hi" for r in fast)
        try:
            await slow
            raise AssertionError("the stalled request was not timed out")
        except TeacherTimeout as e:
            assert "0.4 s" in str(e)
        assert loop.time() - t0 >= 0.39  # not before its deadline
        assert (await c.complete(body, "after")).content == "hi"  # the timer was armed again
        again = asyncio.ensure_future(c.complete(stalled, "s2"))
        try:
            await again
            raise AssertionError("the second stalled request was not timed out")
        except TeacherTimeout:
            pass
    finally:
        await c.aclose()
        server.close()
    assert c._timer is None and not c._deadlines


async def test_a_deadline_earlier_than_the_queues_last_gets_its_own_timer() -> None:
    c = HttpChatClient(Endpoint(base_url="http://127.0.0.1:9/v1"), concurrency=1, timeout_s=1.0)
    loop = asyncio.get_running_loop()
    timed_out: list[str] = []

    class Conn:
        def __init__(self, name: str) -> None:
            self.name = name
            self.sent = 1
            self.answered = False

        def waiting(self, request: int) -> bool:
            return request == self.sent and not self.answered

        def time_out(self, message: str) -> None:
            timed_out.append(self.name)

    conns: list[Any] = [Conn("late"), Conn("early"), Conn("answered")]
    now = loop.time()
    assert c._watch(loop, now + 0.2, conns[0]) is None  # queued
    own = c._watch(loop, now + 0.1, conns[1])  # its connection took a while: own timer
    assert own is not None
    assert c._watch(loop, now + 0.25, conns[2]) is None
    conns[2].answered = True
    await asyncio.sleep(0.4)
    assert timed_out == ["early", "late"]
    await c.aclose()


async def test_answered_requests_behind_a_slow_one_are_not_held() -> None:
    """The deadline queue names requests by connection and number, never holds an answer, and drops
    answered entries stuck behind a slow request once they outnumber what can be in flight."""
    c = HttpChatClient(Endpoint(base_url="http://127.0.0.1:9/v1"), concurrency=4, timeout_s=60.0)
    loop = asyncio.get_running_loop()

    class Conn:
        def __init__(self) -> None:
            self.sent = 1
            self.answered = False

        def waiting(self, request: int) -> bool:
            return request == self.sent and not self.answered

        def time_out(self, message: str) -> None:
            raise AssertionError("nothing is due")

    slow = Conn()
    now = loop.time()
    c._watch(loop, now + 60, slow)
    for i in range(1000):
        done = Conn()
        c._watch(loop, now + 60 + i * 1e-6, done)
        done.answered = True
    assert len(c._deadlines) <= 2 * 4 + 64 + 1
    assert c._deadlines[0][1] is slow
    await c.aclose()


async def test_close_flushes_at_once_whatever_the_commit_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "COMMIT_INTERVAL_S", 60.0)
    rd = RunDir.open(tmp_path / "run")
    writer = ResultWriter(rd)
    await writer.start()
    await writer.write(TRACES, b'{"a":1}\n')  # the first commit goes at once
    second = writer.write(TRACES, b'{"a":2}\n')  # waits for the interval...
    third = writer.write(TRACES, b'{"a":3}\n')
    await asyncio.sleep(0.05)
    assert not second.done()
    await asyncio.wait_for(writer.close(), 5)  # ...but close does not wait for it
    assert second.done() and third.done() and second.exception() is None
    assert rd.traces_path.read_bytes() == b'{"a":1}\n{"a":2}\n{"a":3}\n'
    assert writer.lines_written[TRACES] == 3


async def test_write_then_calls_back_once_durable_or_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd = RunDir.open(tmp_path / "run")
    writer = ResultWriter(rd)
    await writer.start()
    seen: list[tuple[int, object]] = []

    def done(which: int, error: RunDirError | None) -> None:
        assert error is not None or b'{"a":1}\n' in rd.traces_path.read_bytes()  # on disk first
        seen.append((which, error))

    writer.write_then(TRACES, b'{"a":1}\n', done)
    assert seen == []  # not before the commit
    await writer.write(TRACES, b'{"a":2}\n')  # committed with or after it
    assert seen == [(TRACES, None)]

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "_os_write", full)
    writer.write_then(REJECTED, b'{"b":1}\n', done)
    await writer.close()
    assert seen[1][0] == REJECTED and isinstance(seen[1][1], RunDirError)
    writer.write_then(TRACES, b'{"c":1}\n', done)  # a failed writer answers at once
    assert isinstance(seen[2][1], RunDirError)
    assert rd.traces_path.read_bytes() == b'{"a":1}\n{"a":2}\n'
