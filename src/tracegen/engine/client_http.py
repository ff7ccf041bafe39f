"""tracegen's own HTTP/1.1 client for the chat endpoint: the default transport (``transport: http``).

A teacher client needs one thing of HTTP: POST a JSON body and read a JSON answer, thousands at once, on
kept-alive connections. aiohttp's ``ClientSession`` spends most of its per-request CPU on what it does beyond
that (cookies, redirects, tracing signals, proxy and auth plumbing, payload objects, stream readers); at zero
latency the client process, not the server, was the bottleneck (see docs/PERFORMANCE.md for the figures).
This client is one :class:`asyncio.Protocol` per connection that parses the answer as it arrives.

What it speaks:

- HTTP/1.1 over TCP, or TLS with the system's CA store, SNI and hostname check
  (:func:`ssl.create_default_context`; OpenSSL honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``);
- one request at a time per connection (no pipelining); connections are kept alive and reused, the most
  recently used first, at most ``concurrency`` of them idle; the host name is resolved at most every 5 min;
- answers framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (trailers skipped) or the end of the
  connection; interim 1xx answers are skipped;
- ``Accept-Encoding: identity``: a body in any other ``Content-Encoding`` is refused (never guessed at).

Limits against a broken or hostile server: the answer's head at most 64 KiB, a chunk-size line at most
4 KiB, the body at most ``max_response_bytes`` (refused once crossed, never held beyond it), the connection
set-up at most min(timeout_s, 30) s and the whole request at most ``timeout_s``.

Not spoken: proxies (when ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` applies to the URL,
:func:`~.client.teacher_client` picks the aiohttp transport), HTTP/2, redirects (a 3xx is an error naming
where it points: fix the base URL).

Errors are the neutral ``Teacher*`` errors of :mod:`.client`, with the aiohttp transport's ``sent``: a
failure to connect was not sent (``sent=False``); anything after the request was written may have been
(``sent=None``), so the budget keeps it charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._json import dumps
from .client import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ChatResult,
    Endpoint,
    TeacherConnectionError,
    TeacherTimeout,
    http_error,
    parse_completion,
    request_headers,
    too_large,
)

__all__ = ["HttpChatClient", "proxy_for"]

HEAD_LIMIT = 64 * 1024
LINE_LIMIT = 4 * 1024
#: How long a resolved address list is used before the name is looked up again (aiohttp's default too).
DNS_TTL_S = 300.0
CONNECT_CAP_S = 30.0

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class _Malformed(Exception):
    """The bytes are not an HTTP/1.x answer (the message says what is wrong)."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: write a request, parse its answer as bytes arrive, resolve a future."""

    def __init__(self, limit: int, owner: set[_Connection]) -> None:
        self._limit = limit
        self._owner = owner  # the client's set of connections: left on close
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.reusable = False
        self._waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self._buf = bytearray()
        self._state = _DONE
        self._status = 0
        self._headers: dict[str, str] = {}
        self._parts: list[bytes] = []
        self._size = 0
        self._left = 0  # bytes still due in a Content-Length body or the current chunk
        self.sent = 0  # requests sent on this connection: names the one in flight (see HttpChatClient._watch)

    # ---- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # bytes nobody asked for: the connection is spent
            self.abort()
            return
        try:
            if self._state == _HEAD and not self._buf and self._whole(data):
                return
            self._buf += data
            self._parse()
        except _Malformed as e:
            self._fail(TeacherConnectionError(f"malformed HTTP answer: {e}", sent=None))
        except TeacherConnectionError as e:  # too large
            self._fail(e)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        self._owner.discard(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == _UNTIL_CLOSE:  # the end of the connection ends the body
            self._finish()
            return
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "the server closed the connection"
        got = "mid-answer" if self._buf or self._state != _HEAD else "before answering"
        waiter.set_exception(TeacherConnectionError(f"connection lost {got} ({why})", sent=None))

    # ---- requests -------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> asyncio.Future[tuple[int, dict[str, str], bytes]]:
        """Write one request; the future resolves to (status, headers with lower-case names, body)."""
        assert self.transport is not None
        waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.sent += 1
        self.reusable = False
        self._state = _HEAD
        self._buf.clear()
        self._parts = []
        self._size = 0
        self.transport.write(data)
        return waiter

    def time_out(self, message: str) -> None:
        """The request's deadline passed: fail it and drop the connection."""
        self._fail(TeacherTimeout(message, sent=None))

    def waiting(self, request: int) -> bool:
        """Is request number ``request`` of this connection still waiting for its answer?"""
        return request == self.sent and self._waiter is not None and not self._waiter.done()

    def abort(self) -> None:
        self.open = False
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, e: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(e)
        self.abort()

    def _finish(self) -> None:
        self._state = _DONE
        body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        assert self._waiter is not None
        self._waiter.set_result((self._status, self._headers, body))

    # ---- the parser -----------------------------------------------------------------------------------------
    def _whole(self, data: bytes) -> bool:
        """The common case, at C speed: ``data`` is exactly one whole answer framed by Content-Length.
        Finishes it and returns True; else (anything else, or less) returns False and touches nothing
        but the head's parse, which :meth:`_parse` then redoes from the buffer."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > HEAD_LIMIT:
            return False
        self._start_body(data[:end])
        if self._state == _LENGTH and self._left == len(data) - end - 4:
            self._parts = [data[end + 4 :]]
            self._size = self._left
            self._finish()
            return True
        self._state = _HEAD  # parse it again, bytes by bytes
        return False

    def _parse(self) -> None:
        """Consume what ``_buf`` holds, state by state, until it needs more bytes or the answer is whole."""
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > HEAD_LIMIT:
                        raise _Malformed(f"head longer than {HEAD_LIMIT:,} bytes")
                    return
                if end > HEAD_LIMIT:
                    raise _Malformed(f"head longer than {HEAD_LIMIT:,} bytes")
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._start_body(head)
            elif state == _LENGTH:
                if not self._take():
                    return
                self._state = _DONE
            elif state == _UNTIL_CLOSE:
                if buf:
                    self._add(bytes(buf))
                    buf.clear()
                return
            elif state == _CHUNK_SIZE:
                line = self._line()
                if line is None:
                    return
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _Malformed(f"bad chunk size {bytes(size_text[:20])!r}") from None
                if size < 0:
                    raise _Malformed("negative chunk size")
                if size == 0:
                    self._state = _TRAILER
                else:
                    if self._size + size > self._limit:
                        raise too_large(self._limit)
                    self._left = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not self._take():
                    return
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise _Malformed("chunk not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                line = self._line()
                if line is None:
                    return
                if not line:
                    self._state = _DONE
            if self._state == _DONE:
                if buf:  # more than one answer: nothing was asked for it
                    self.reusable = False
                self._finish()
                return

    def _take(self) -> bool:
        """Move up to the ``_left`` bytes still due from ``_buf`` to the body; True once none are due."""
        buf = self._buf
        take = min(self._left, len(buf))
        if take:
            self._add(bytes(buf[:take]))
            del buf[:take]
            self._left -= take
        return not self._left

    def _line(self) -> bytearray | None:
        """The next CRLF-ended line of ``_buf`` (consumed, without CRLF), or None when it has not arrived."""
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > LINE_LIMIT:
                raise _Malformed(f"line longer than {LINE_LIMIT:,} bytes")
            return None
        if end > LINE_LIMIT:
            raise _Malformed(f"line longer than {LINE_LIMIT:,} bytes")
        line = buf[:end]
        del buf[: end + 2]
        return line

    def _add(self, part: bytes) -> None:
        self._size += len(part)
        if self._size > self._limit:
            raise too_large(self._limit)
        self._parts.append(part)

    def _start_body(self, head: bytes) -> None:
        """Parse the status line and headers; choose how the body is framed (RFC 9112 section 6.3)."""
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0]
        code = status_line[9:12]
        if not status_line.startswith("HTTP/1.") or not code.isdigit() or status_line[12:13] not in (" ", ""):
            raise _Malformed(f"bad status line {status_line[:40]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        last = ""
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():  # (a folded line always fails this test)
                if line[:1] in (" ", "\t"):  # obsolete line folding: continues the previous value
                    if not last:
                        raise _Malformed("folded line without a header")
                    headers[last] += " " + line.strip()
                    continue
                raise _Malformed(f"bad header line {line[:40]!r}")
            last = name.lower()
            value = value.strip()
            if last not in headers:
                headers[last] = value
            elif last != "content-length":
                headers[last] += ", " + value
            elif headers[last] != value:
                raise _Malformed("conflicting Content-Length headers")
        if 100 <= status < 200:  # interim answer (100 Continue, 103 Early Hints): the real one follows
            self._state = _HEAD
            return
        self._status = status
        self._headers = headers
        http11 = status_line.startswith("HTTP/1.1")
        tokens = headers.get("connection", "").lower()
        self.reusable = ("close" not in tokens) if http11 else ("keep-alive" in tokens)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", ""):
            raise _Malformed(f"Content-Encoding {encoding!r} although identity was asked for")
        if status in (204, 304):
            self._state = _DONE
            return
        te = headers.get("transfer-encoding")
        if te is not None:
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise _Malformed(f"Transfer-Encoding {te!r} (only chunked is spoken)")
            self._state = _CHUNK_SIZE
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Malformed(f"bad Content-Length {length[:20]!r}")
            self._left = int(length)
            if self._left > self._limit:
                raise too_large(self._limit)
            self._state = _LENGTH if self._left else _DONE
            return
        self.reusable = False
        self._state = _UNTIL_CLOSE


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy the environment sets for ``url`` (``<scheme>_proxy`` / ``all_proxy``, either case, minus
    ``no_proxy``), or None. The value itself is never shown: it may carry credentials."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    lower = {k.lower(): v for k, v in env.items() if k.lower().endswith("_proxy") and v}
    proxy = lower.get(f"{parts.scheme}_proxy") or lower.get("all_proxy")
    if not proxy:
        return None
    for entry in lower.get("no_proxy", "").split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return None
        name = entry.split(":", 1)[0].lstrip(".") if not entry.startswith("[") else entry
        if name and (host == name or host.endswith("." + name)):
            return None
    return proxy


class HttpChatClient:
    """``ChatClient`` speaking the OpenAI protocol on its own HTTP/1.1 connections (see the module docs)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        concurrency: int,
        timeout_s: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._endpoint = endpoint
        self._concurrency = max(1, concurrency)
        self._timeout_s = timeout_s
        self._timeout_message = f"no answer within {timeout_s:g} s"
        self._max_bytes = max_response_bytes
        url = urlsplit(endpoint.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint.display_url}")
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.port is not None:
            host = f"{host}:{url.port}"
        target = url.path.rstrip("/") + "/chat/completions" + (f"?{url.query}" if url.query else "")
        headers = {"Host": host, **request_headers(endpoint), "Accept-Encoding": "identity"}
        fields = [f"POST {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
        if any("\r" in f or "\n" in f for f in fields):
            raise ValueError("a header value contains a line break (check the key and the base URL)")
        self._head = ("\r\n".join(fields) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._addresses: list[tuple[int, Any]] = []
        self._resolved_at = float("-inf")
        self._literal = False
        with contextlib.suppress(ValueError):  # an IP address needs no lookup
            family = socket.AF_INET6 if ipaddress.ip_address(self._host).version == 6 else socket.AF_INET
            self._addresses, self._literal = [(family, (self._host, self._port))], True
        self._ssl: ssl.SSLContext | None = None
        # deadlines of the requests on the wire, in send order (see _watch); one timer for the earliest
        self._deadlines: deque[tuple[float, _Connection, int]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    async def complete(
        self, body: dict[str, Any], request_id: str, *, payload: bytes | None = None
    ) -> ChatResult:
        """POST one chat completion; raise TeacherHTTPError / TeacherConnectionError / TeacherTimeout."""
        data = payload if payload is not None else dumps(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        conn = self._idle_connection() or await self._connect(loop, deadline)
        request = b"%sContent-Length: %d\r\nX-Client-Request-Id: %s\r\n\r\n%s" % (
            self._head,
            len(data),
            request_id.encode("ascii", "replace"),
            data,
        )
        waiter = conn.send(request)
        timer = self._watch(loop, deadline, conn)
        try:
            status, headers, raw = await waiter
        except BaseException:
            conn.abort()  # cancelled or failed mid-answer: the connection's state is unknown
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if conn.reusable and conn.open and len(self._idle) < self._concurrency:
            self._idle.append(conn)
        else:
            conn.abort()
        if status >= 300:
            raise http_error(self._endpoint, status, raw, headers)
        return parse_completion(raw, status, headers)

    def _watch(
        self, loop: asyncio.AbstractEventLoop, deadline: float, conn: _Connection
    ) -> asyncio.TimerHandle | None:
        """Time the request just sent on ``conn`` out at ``deadline`` unless it is answered by then.

        Deadlines are the send time + timeout_s, so they mostly arrive in order: those go to a queue
        watched by one timer armed at the earliest (a timer per request, made and cancelled, costs more
        than the whole queue). One earlier than the queue's last (its connection took a while to set up)
        gets a timer of its own, returned for the caller to cancel. An entry names its request by the
        connection and its number there (no answer is held), and answered entries behind a slow one are
        dropped once they outnumber what can be in flight."""
        deadlines = self._deadlines
        if deadlines and deadline < deadlines[-1][0]:
            return loop.call_at(deadline, conn.time_out, self._timeout_message)
        while deadlines and not deadlines[0][1].waiting(deadlines[0][2]):  # answered: nothing to watch
            deadlines.popleft()
        if len(deadlines) > 2 * self._concurrency + 64:
            self._deadlines = deadlines = deque(e for e in deadlines if e[1].waiting(e[2]))
        deadlines.append((deadline, conn, conn.sent))
        if self._timer is None or self._timer_loop is not loop:
            self._arm(loop, deadlines[0][0])
        return None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = loop.call_at(when, self._expire, loop)
        self._timer_at = when
        self._timer_loop = loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer fired: time out every request still waiting whose deadline came (as its own timer
        would have, fired at the same loop turn), then arm the timer for the next one."""
        self._timer = None
        due = max(self._timer_at, loop.time())
        deadlines = self._deadlines
        while deadlines:
            deadline, conn, request = deadlines[0]
            if not conn.waiting(request):
                deadlines.popleft()
            elif deadline <= due:
                deadlines.popleft()
                conn.time_out(self._timeout_message)
            else:
                self._arm(loop, deadline)
                return

    def _idle_connection(self) -> _Connection | None:
        """The most recently used idle connection still open, or None (then connect)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.open:
                return conn
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        timeout = max(0.0, min(CONNECT_CAP_S, deadline - loop.time()))
        try:
            conn = await asyncio.wait_for(self._open_connection(loop), timeout)
        except asyncio.TimeoutError:
            where = self._endpoint.display_url
            raise TeacherTimeout(f"connect to {where} timed out after {timeout:g} s", sent=False) from None
        except (OSError, ssl.SSLError, ValueError) as e:
            where = self._endpoint.display_url
            text = self._endpoint.redact(getattr(e, "strerror", None) or str(e) or type(e).__name__)
            raise TeacherConnectionError(f"cannot connect to {where}: {text}", sent=False) from None
        self._all.add(conn)
        return conn

    async def _open_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self._tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        last: OSError | None = None
        for family, address in await self._resolve(loop):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._max_bytes, self._all),
                    sock=sock,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
                return conn
            except OSError as e:
                sock.close()
                last = e
            except BaseException:
                sock.close()
                raise
        raise last or OSError(f"no address for {self._host}")

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> list[tuple[int, Any]]:
        """The host's addresses (an IP literal as is; a name looked up at most every DNS_TTL_S)."""
        if self._literal:
            return self._addresses
        if not self._addresses or loop.time() - self._resolved_at > DNS_TTL_S:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
            self._addresses = [(family, address) for family, _, _, _, address in infos]
            self._resolved_at = loop.time()
        return self._addresses

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
            conn.open = False
        self._all.clear()
        self._idle.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()

    def __repr__(self) -> str:
        return f"HttpChatClient({self._endpoint.display_url!r})"
