"""tracegen's own HTTP/1.1 client for the chat endpoint: the default transport (``transport: http``).

A teacher client needs one thing of HTTP: POST a JSON body and read a JSON answer, thousands at once, on
kept-alive connections. aiohttp's ``ClientSession`` spends most of its per-request CPU on what it does beyond
that (cookies, redirects, tracing signals, proxy and auth plumbing, payload objects, stream readers); at zero
latency the client process, not the server, was the bottleneck (see docs/PERFORMANCE.md for the figures).
This client is one :class:`asyncio.Protocol` per connection that parses the answer as it arrives
(:mod:`.http_wire`); this module keeps the connections, their deadlines and the neutral errors.

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
)
from .http_wire import Connection

__all__ = ["HttpChatClient", "proxy_for"]

#: How long a resolved address list is used before the name is looked up again (aiohttp's default too).
DNS_TTL_S = 300.0
CONNECT_CAP_S = 30.0


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
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._addresses: list[tuple[int, Any]] = []
        self._resolved_at = float("-inf")
        self._literal = False
        with contextlib.suppress(ValueError):  # an IP address needs no lookup
            family = socket.AF_INET6 if ipaddress.ip_address(self._host).version == 6 else socket.AF_INET
            self._addresses, self._literal = [(family, (self._host, self._port))], True
        self._ssl: ssl.SSLContext | None = None
        # deadlines of the requests on the wire, in send order (see _watch); one timer for the earliest
        self._deadlines: deque[tuple[float, Connection, int]] = deque()
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
        self, loop: asyncio.AbstractEventLoop, deadline: float, conn: Connection
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

    def _idle_connection(self) -> Connection | None:
        """The most recently used idle connection still open, or None (then connect)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.open:
                return conn
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Connection:
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

    async def _open_connection(self, loop: asyncio.AbstractEventLoop) -> Connection:
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
                    lambda: Connection(self._max_bytes, self._all, self._endpoint.redact),
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
