"""One HTTP/1.1 connection of the default transport (:mod:`.client_http`): write a request, parse its
answer as the bytes arrive, resolve a future.

Answers are framed by ``Content-Length``, ``Transfer-Encoding: chunked`` (trailers skipped) or the end of the
connection (RFC 9112 section 6.3); interim 1xx answers are skipped; a body in any ``Content-Encoding`` but
identity is refused. Limits: the head at most :data:`HEAD_LIMIT`, a chunk-size or trailer line at most
:data:`LINE_LIMIT`, the body at most the client's ``max_response_bytes``. A malformed answer fails the request
with a :class:`~tracegen.errors.TeacherConnectionError` that may have been sent (``sent=None``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .client import TeacherConnectionError, TeacherTimeout, too_large

__all__ = ["HEAD_LIMIT", "LINE_LIMIT", "Connection"]

HEAD_LIMIT = 64 * 1024
LINE_LIMIT = 4 * 1024

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class _Malformed(Exception):
    """The bytes are not an HTTP/1.x answer (the message says what is wrong)."""


class Connection(asyncio.Protocol):
    """One kept-alive connection: write a request, parse its answer as bytes arrive, resolve a future."""

    def __init__(self, limit: int, owner: set[Connection], redact: Callable[[str], str]) -> None:
        self._limit = limit
        self._owner = owner  # the client's set of connections: left on close
        self._redact = redact  # a malformed answer's excerpt may echo the key
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
            self._fail(TeacherConnectionError(f"malformed HTTP answer: {self._redact(str(e))}", sent=None))
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
