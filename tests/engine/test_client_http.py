"""tracegen's own HTTP/1.1 client (transport "http") against a raw socket server that sends exactly the bytes
a test scripts: every framing the client speaks, the limits, the errors and their ``sent``, reuse of
connections. The whole engine on this transport runs against the fake server in the engine and hostile
tests (parametrized over the transports)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tracegen.engine.client import Endpoint, client_for
from tracegen.engine.client_http import HttpChatClient, proxy_for
from tracegen.errors import TeacherConnectionError, TeacherHTTPError, TeacherProtocolError, TeacherTimeout

ANSWER = json.dumps(
    {
        "model": "m",
        "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
).encode()

Reply = bytes | list[bytes] | None  # whole bytes, pieces sent apart, or None: close without answering


def ok(body: bytes = ANSWER, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, sizes: tuple[int, ...] = (7, 1, 1000)) -> list[bytes]:
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    at = 0
    for size in sizes:
        part = body[at : at + size]
        if not part:
            break
        pieces.append(b"%x;ext=1\r\n" % len(part) + part + b"\r\n")
        at += len(part)
    pieces.append(b"0\r\nX-Trailer: t\r\n\r\n")
    return [b for p in pieces for b in (p[: len(p) // 2], p[len(p) // 2 :])]  # every piece split in two


class RawServer:
    """Answers each request with the next scripted reply; records requests and connections."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                reply = self.replies.pop(0)
                if reply is None:
                    break
                for piece in [reply] if isinstance(reply, bytes) else reply:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                if b"connection: close" in (reply if isinstance(reply, bytes) else reply[0]).lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def raw_server(replies: list[Reply]) -> AsyncIterator[RawServer]:
    srv = RawServer(replies)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()


def client(port: int, **kw: Any) -> HttpChatClient:
    opts: dict[str, Any] = {"concurrency": 4, "timeout_s": 5.0, **kw}
    return HttpChatClient(Endpoint(f"http://127.0.0.1:{port}/v1", api_key="sk-secret-123"), **opts)


async def ask(c: HttpChatClient) -> Any:
    return await c.complete({"model": "m", "messages": []}, "req-1")


@pytest.mark.parametrize(
    "reply",
    [
        ok(),
        [ok()[:5], ok()[5:40], ok()[40:]],
        chunked(ANSWER),
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + ANSWER,  # framed by the end of the connection
        b"HTTP/1.0 200 OK\r\n\r\n" + ANSWER,
    ],
    ids=["length", "length-in-pieces", "chunked", "interim-100", "until-close", "http-1.0"],
)
async def test_every_framing_yields_the_answer(reply: Reply) -> None:
    async with raw_server([reply]) as srv:
        c = client(srv.port)
        result = await ask(c)
        await c.aclose()
    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("hi", 3, 1)


async def test_the_request_carries_the_headers_and_body() -> None:
    async with raw_server([ok()]) as srv:
        c = client(srv.port)
        await c.complete({}, "abc-7", payload=b'{"x":1}')
        await c.aclose()
    head, body = srv.requests[0].split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Host"] == f"127.0.0.1:{srv.port}"
    assert fields["Authorization"] == "Bearer sk-secret-123"
    assert fields["Content-Length"] == "7" and body == b'{"x":1}'
    assert fields["X-Client-Request-Id"] == "abc-7"
    assert fields["Accept-Encoding"] == "identity"


async def test_connections_are_kept_alive_and_reused_unless_the_server_closes() -> None:
    async with raw_server([ok(), chunked(ANSWER), ok(), ok(ANSWER, "Connection: close"), ok()]) as srv:
        c = client(srv.port)
        for _ in range(4):
            await ask(c)
        assert srv.connections == 1
        await ask(c)  # the server closed after the 4th: a new connection
        assert srv.connections == 2
        await c.aclose()


async def test_headers_are_read_case_insensitively_for_the_limiter() -> None:
    reply = ok(ANSWER, "X-RateLimit-Remaining-Requests: 7", "x-ratelimit-limit-requests:   10 ")
    async with raw_server([reply]) as srv:
        c = client(srv.port)
        result = await ask(c)
        await c.aclose()
    assert result.headers["x-ratelimit-remaining-requests"] == "7"
    assert result.headers["x-ratelimit-limit-requests"] == "10"


async def test_an_error_status_is_an_http_error_with_the_servers_message_and_retry_after() -> None:
    body = b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
    async with raw_server([ok(body, "Retry-After: 2").replace(b"200 OK", b"429 Too Many Requests")]) as srv:
        c = client(srv.port)
        with pytest.raises(TeacherHTTPError) as e:
            await ask(c)
        await c.aclose()
    assert (e.value.status, e.value.code, e.value.retry_after_s) == (429, "rate_limit_exceeded", 2.0)
    assert "slow down" in str(e.value)


async def test_a_redirect_names_where_it_points_without_credentials() -> None:
    reply = (
        b"HTTP/1.1 301 Moved\r\nLocation: https://user:pw@api.example/v1/chat\r\nContent-Length: 0\r\n\r\n"
    )
    async with raw_server([reply]) as srv:
        c = client(srv.port)
        with pytest.raises(TeacherHTTPError) as e:
            await ask(c)
        await c.aclose()
    assert e.value.status == 301
    assert "redirects to https://" in str(e.value) and "api.example" in str(e.value)
    assert "pw" not in str(e.value) and "--base-url" in str(e.value)


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", "Content-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
        (b"SMTP ready\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "head longer"),
    ],
    ids=[
        "gzip",
        "te-gzip",
        "not-http",
        "two-lengths",
        "negative-length",
        "no-colon",
        "bad-chunk",
        "huge-head",
    ],
)
async def test_malformed_answers_are_one_connection_error_that_may_have_been_sent(
    reply: bytes, words: str
) -> None:
    async with raw_server([reply]) as srv:
        c = client(srv.port)
        with pytest.raises(TeacherConnectionError) as e:
            await ask(c)
        await c.aclose()
    assert words in str(e.value)
    assert e.value.sent is None


async def test_a_malformed_answer_that_echoes_the_key_names_no_key() -> None:
    async with raw_server([b"HTTP/1.1 200 OK\r\nEcho sk-secret-123\r\n\r\n"]) as srv:
        c = client(srv.port)
        with pytest.raises(TeacherConnectionError) as e:
            await ask(c)
        await c.aclose()
    assert "bad header line" in str(e.value) and "sk-secret-123" not in str(e.value)


@pytest.mark.parametrize(
    "reply",
    [
        ok(b"x" * 2000),
        chunked(b"x" * 2000, (1500, 1500)),
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 2000,
    ],
    ids=["length", "chunked", "until-close"],
)
async def test_a_body_over_the_limit_is_refused_as_billed(reply: Reply) -> None:
    async with raw_server([reply]) as srv:
        c = client(srv.port, max_response_bytes=1000)
        with pytest.raises(TeacherProtocolError) as e:
            await ask(c)
        await c.aclose()
    assert e.value.billed and "max_response_bytes" in str(e.value)


async def test_a_server_that_closes_without_answering_may_have_received_the_request() -> None:
    async with raw_server([None]) as srv:
        c = client(srv.port)
        with pytest.raises(TeacherConnectionError) as e:
            await ask(c)
        await c.aclose()
    assert e.value.sent is None and "before answering" in str(e.value)


async def test_no_answer_within_the_timeout_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")  # then nothing: a slow-loris answer
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    c = client(server.sockets[0].getsockname()[1], timeout_s=0.3)
    with pytest.raises(TeacherTimeout) as e:
        await ask(c)
    assert e.value.sent is None and "0.3 s" in str(e.value)
    assert not c._idle
    await c.aclose()
    server.close()


async def test_a_refused_connection_was_not_sent_and_names_no_key() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    c = client(port)
    with pytest.raises(TeacherConnectionError) as e:
        await ask(c)
    await c.aclose()
    assert e.value.sent is False and "cannot connect" in str(e.value)
    assert "sk-secret" not in str(e.value)


async def test_a_cancelled_request_drops_its_connection() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    c = client(server.sockets[0].getsockname()[1])
    task = asyncio.ensure_future(ask(c))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not c._idle
    await c.aclose()
    server.close()


def test_an_ipv6_literal_and_a_query_shape_the_request_line() -> None:
    c = HttpChatClient(Endpoint("http://[::1]:8080/openai?api-version=1"), concurrency=1, timeout_s=1)
    assert c._head.startswith(b"POST /openai/chat/completions?api-version=1 HTTP/1.1\r\nHost: [::1]:8080\r\n")
    with pytest.raises(ValueError, match="line break"):
        HttpChatClient(Endpoint("http://h/v1", api_key="sk-1\r\nX-Evil: 1"), concurrency=1, timeout_s=1)


@pytest.mark.parametrize(
    ("env", "url", "proxied"),
    [
        ({}, "https://api.openai.com/v1", False),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://api.openai.com/v1", True),
        ({"https_proxy": "http://p:3128"}, "http://localhost:8000/v1", False),  # only for https
        ({"ALL_PROXY": "http://p:3128"}, "http://localhost:8000/v1", True),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "openai.com,localhost"}, "https://api.openai.com/v1", False),
        ({"HTTPS_PROXY": "http://p", "no_proxy": ".internal"}, "https://api.openai.com/v1", True),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}, "https://api.openai.com/v1", False),
    ],
)
def test_proxy_variables_are_read_like_curl_and_aiohttp(env: dict[str, str], url: str, proxied: bool) -> None:
    assert (proxy_for(url, env) is not None) is proxied


def test_a_proxy_makes_the_default_transport_aiohttp() -> None:
    endpoint = Endpoint("https://api.openai.com/v1", api_key="sk-x")
    make: Callable[[dict[str, str]], Any] = lambda env: client_for(  # noqa: E731
        "http", endpoint, concurrency=2, timeout_s=1, env=env
    )
    assert type(make({})).__name__ == "HttpChatClient"
    assert type(make({"HTTPS_PROXY": "http://proxy:3128"})).__name__ == "AiohttpChatClient"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_tls_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = RawServer([ok()])
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    endpoint = Endpoint(f"https://localhost:{port}/v1")
    untrusted = HttpChatClient(endpoint, concurrency=1, timeout_s=5)
    with pytest.raises(TeacherConnectionError) as e:
        await ask(untrusted)  # type: ignore[arg-type]
    assert e.value.sent is False and "cannot connect" in str(e.value)
    await untrusted.aclose()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system store, as OpenSSL reads it, now trusts it
    trusted = HttpChatClient(endpoint, concurrency=1, timeout_s=5)
    result = await ask(trusted)
    await trusted.aclose()
    server.close()
    assert result.content == "hi"
