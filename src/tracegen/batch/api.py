"""The Files and Batches endpoints through the official SDK, with the engine's retry policy.

SDK exceptions are mapped to the engine's neutral ``Teacher*`` errors, so the one tenacity policy
(:func:`tracegen.engine.retry_policy`) retries transient failures of every control-plane call. Two calls
are not idempotent and are made safe differently:

- ``upload``: after a failure whose outcome is unknown (timeout, dropped connection, 5xx), the file list is
  searched for the upload's unique filename before trying again;
- ``create``: after an unknown outcome, the batch list is searched for the part's metadata
  (``tracegen_run`` + ``tracegen_part``) before trying again: a batch is never created twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
import openai
from tenacity import AsyncRetrying

from ..engine import (
    Endpoint,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    call_with_retries,
    fatal_error,
)
from ..engine.client_sdk import open_sdk_client, sdk_http_error
from ..errors import BatchCallError, TracegenError
from ..redact import redact_url
from .parts import BATCH_ENDPOINT

__all__ = [
    "CANCELLABLE",
    "TERMINAL",
    "BatchApi",
    "BatchCallError",
    "BatchInfo",
    "matching_batches",
    "open_client",
]

T = TypeVar("T")

#: Batch statuses after which nothing changes any more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Statuses a batch can still be cancelled in.
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The fields of a Batch object tracegen uses."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    created_at: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, b: Any) -> BatchInfo:
        counts = b.request_counts
        errors = b.errors.data if b.errors is not None and b.errors.data else []
        return cls(
            id=b.id,
            status=b.status,
            input_file_id=b.input_file_id,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
            total=counts.total if counts is not None else 0,
            completed=counts.completed if counts is not None else 0,
            failed=counts.failed if counts is not None else 0,
            created_at=int(b.created_at or 0),
            metadata=dict(b.metadata or {}),
            errors=tuple(e.model_dump() for e in errors),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def open_client(endpoint: Endpoint, *, timeout_s: float) -> openai.AsyncOpenAI:
    """``AsyncOpenAI`` for ``endpoint`` with the SDK's own retries off (ours are the engine's policy)."""
    return open_sdk_client(endpoint, timeout_s=timeout_s)


def _never_connected(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, httpx2.ConnectError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _outcome_unknown(e: TeacherCallError) -> bool:
    """True when the call may have taken effect (5xx, timeout, connection lost after sending)."""
    if isinstance(e, TeacherHTTPError):
        return e.status >= 500
    return e.sent is not False


class BatchApi:
    """Files + Batches calls, each retried by ``policy``; errors are tracegen errors."""

    def __init__(self, client: openai.AsyncOpenAI, endpoint: Endpoint, policy: AsyncRetrying) -> None:
        self.client = client
        self.endpoint = endpoint
        self.policy = policy

    # ---- plumbing ------------------------------------------------------------------------------------
    async def _once(self, fn: Callable[[], Awaitable[T]]) -> T:
        redact = self.endpoint.redact
        try:
            return await fn()
        except openai.APIStatusError as e:
            raise sdk_http_error(e, redact) from None
        except openai.APITimeoutError:
            raise TeacherTimeout("no answer in time", sent=None) from None
        except openai.APIConnectionError as e:
            if _never_connected(e):
                raise TeacherConnectionError(
                    f"cannot connect: {redact(str(e.__cause__ or e))}", sent=False
                ) from None
            raise TeacherConnectionError(f"connection lost: {redact(str(e))}", sent=None) from None
        except openai.APIResponseValidationError as e:
            raise TeacherConnectionError(f"unexpected answer: {redact(str(e))}", sent=True) from None

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn`` under the retry policy; a final failure becomes AuthError/QuotaError or BatchError."""
        try:
            return await call_with_retries(self.policy, lambda: self._once(fn))
        except TeacherCallError as e:
            raise as_tracegen_error(what, e, self.endpoint.base_url) from None

    # ---- files ---------------------------------------------------------------------------------------
    async def find_files(self, filename: str, size: int) -> list[str]:
        """Ids of uploaded batch input files named ``filename`` with ``size`` bytes (oldest first)."""

        return await self.call(
            f"list files (looking for {filename})", lambda: self._scan_files(filename, size)
        )

    async def _make_once(
        self, what: str, make: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[list[T]]]
    ) -> T:
        """``make`` under the retry policy; after an attempt whose outcome is unknown, the oldest of what
        ``find`` finds is taken instead of trying again (what did arrive is never made twice)."""

        async def attempt() -> T:
            try:
                return await self._once(make)
            except TeacherCallError as e:
                if _outcome_unknown(e):
                    found = await self._once(find)
                    if found:
                        return found[0]
                raise

        try:
            return await call_with_retries(self.policy, attempt)
        except TeacherCallError as e:
            raise as_tracegen_error(what, e, self.endpoint.base_url) from None

    async def upload(self, filename: str, data: bytes) -> str:
        """Upload a batch input file; after an unknown outcome, reuse the copy that did arrive."""

        async def make() -> str:
            f = await self.client.files.create(file=(filename, data, "application/jsonl"), purpose="batch")
            return f.id

        return await self._make_once(
            f"upload {filename}", make, lambda: self._scan_files(filename, len(data))
        )

    async def _scan_files(self, filename: str, size: int) -> list[str]:
        found: list[tuple[int, str]] = []
        async for f in self.client.files.list(purpose="batch"):
            if f.filename == filename and f.bytes == size:
                found.append((f.created_at, f.id))
        return [fid for _, fid in sorted(found)]

    async def file_exists(self, file_id: str) -> bool:
        try:
            await call_with_retries(
                self.policy, lambda: self._once(lambda: self.client.files.retrieve(file_id))
            )
        except TeacherHTTPError as e:
            if e.status == 404:
                return False
            raise as_tracegen_error(f"retrieve file {file_id}", e, self.endpoint.base_url) from None
        except TeacherCallError as e:
            raise as_tracegen_error(f"retrieve file {file_id}", e, self.endpoint.base_url) from None
        return True

    async def delete_file(self, file_id: str) -> None:
        """Delete a file; a missing file is fine."""
        try:
            await call_with_retries(
                self.policy, lambda: self._once(lambda: self.client.files.delete(file_id))
            )
        except TeacherHTTPError as e:
            if e.status != 404:
                raise as_tracegen_error(f"delete file {file_id}", e, self.endpoint.base_url) from None
        except TeacherCallError as e:
            raise as_tracegen_error(f"delete file {file_id}", e, self.endpoint.base_url) from None

    async def download(self, file_id: str) -> bytes:
        """The content of an output or error file."""

        async def get() -> bytes:
            resp = await self.client.files.content(file_id)
            return resp.content

        return await self.call(f"download file {file_id}", get)

    # ---- batches -------------------------------------------------------------------------------------
    async def _scan_batches(self, since: int) -> list[BatchInfo]:
        out: list[BatchInfo] = []
        async for b in self.client.batches.list(limit=100):
            if int(b.created_at or 0) < since:
                break
            out.append(BatchInfo.of(b))
        return out

    async def list_batches(self, *, since: int = 0) -> list[BatchInfo]:
        """Batches created at or after ``since`` (unix seconds), newest first."""
        return await self.call("list batches", lambda: self._scan_batches(since))

    async def create(self, input_file_id: str, metadata: Mapping[str, str], since: int) -> BatchInfo:
        """Create a batch; after an unknown outcome, look for it by metadata before trying again."""

        async def make() -> BatchInfo:
            b = await self.client.batches.create(
                input_file_id=input_file_id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata=dict(metadata),
            )
            return BatchInfo.of(b)

        async def find() -> list[BatchInfo]:
            return matching_batches(await self._scan_batches(since), metadata, input_file_id)

        return await self._make_once(f"create the batch of {input_file_id}", make, find)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        async def get() -> BatchInfo:
            return BatchInfo.of(await self.client.batches.retrieve(batch_id))

        return await self.call(f"poll batch {batch_id}", get)

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Cancel a batch; one that meanwhile reached a final state is returned as it is."""
        try:
            b = await call_with_retries(
                self.policy, lambda: self._once(lambda: self.client.batches.cancel(batch_id))
            )
            return BatchInfo.of(b)
        except TeacherHTTPError as e:
            if e.status in (400, 409):
                info = await self.retrieve(batch_id)
                if info.status not in CANCELLABLE:
                    return info
            raise as_tracegen_error(f"cancel batch {batch_id}", e, self.endpoint.base_url) from None
        except TeacherCallError as e:
            raise as_tracegen_error(f"cancel batch {batch_id}", e, self.endpoint.base_url) from None


def matching_batches(
    batches: list[BatchInfo], metadata: Mapping[str, str], input_file_id: str | None
) -> list[BatchInfo]:
    """The batches that are ours for one part: its metadata, or its input file; oldest first."""
    found = [
        b
        for b in batches
        if all(b.metadata.get(k) == v for k, v in metadata.items())
        or (input_file_id is not None and b.input_file_id == input_file_id)
    ]
    return sorted(found, key=lambda b: (b.created_at, b.id))


def as_tracegen_error(what: str, e: TeacherCallError, base_url: str) -> TracegenError:
    """The error to raise after a control-plane call failed for good."""
    fatal = fatal_error(e)
    if fatal is not None:
        return fatal
    return BatchCallError(
        f"cannot {what} at {redact_url(base_url)}: {e}; check the endpoint (--base-url) and rerun the same command: "
        "batches already created are polled again, never created twice",
        e,
    )
