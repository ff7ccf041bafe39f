"""Files and Batch API endpoints of the fake server, in the real wire format.

Lifecycle of a batch (``batch_delay_s`` = D): ``validating`` for 0.1·D, then the input file is checked as
the real API does (JSON lines, unique ``custom_id``, ``method`` POST, ``url`` equal to the batch endpoint,
one model, 1..50,000 lines); a bad file ends the batch ``failed`` with ``errors.data`` naming code, line and
param.
Then ``in_progress`` for 0.8·D, the lines answered one by one at an even pace, then ``finalizing`` for 0.1·D,
then ``completed`` with an output file (and an error file when some lines failed).

* ``batch_fail_rate``: that share of lines (seeded draw) gets a 500 error line in the error file.
* ``batch_expire``: after ``batch_expire_fraction`` of the lines the batch ends ``expired``; the output file
  holds the answered lines and the error file lists every other line with ``error.code`` ``batch_expired``.
* cancel (in ``validating`` / ``in_progress``): ``cancelling`` at once, ``cancelled`` after the line being
  answered; answered lines go to the output file, the rest to the error file as ``batch_cancelled``.

``request_counts.failed`` counts error lines of executed requests (validation errors and injected
failures); expired and cancelled lines are in neither ``completed`` nor ``failed``. Every answered line is
billed at Batch API prices (ledger ``kind: "batch"``, ``custom_id`` = the line's); its entry becomes
``delivered`` when the output file is written.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .chat import Computed, parse_chat_body
from .ledger import LedgerEntry
from .wire import ApiError, dumps, json_response, new_id

if TYPE_CHECKING:
    from .app import FakeState

__all__ = ["BatchStore", "add_batch_routes"]

MAX_BATCH_LINES = 50_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
MAX_REPORTED_ERRORS = 100
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_ENDPOINT = "/v1/chat/completions"
FILE_PURPOSES = frozenset(
    {
        "assistants",
        "assistants_output",
        "batch",
        "batch_output",
        "fine-tune",
        "fine-tune-results",
        "vision",
        "user_data",
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _now() -> int:
    return int(time.time())


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=_now)

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class BatchJob:
    """One batch and its progress."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=_now)
    status: str = "validating"
    times: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        )
    )
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    cancel_requested: bool = False

    def set_status(self, status: str) -> None:
        self.status = status
        key = f"{status}_at"
        if key in self.times:
            self.times[key] = _now()

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            **self.times,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "model": self.model,
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
        }


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def validate_batch_file(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(request lines, validation errors) of a batch input file, checked like the real API."""
    errors: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_line_error("invalid_file_format", "The input file is not valid UTF-8.", None)]
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            errors.append(
                _line_error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            )
            continue
        custom_id = line.get("custom_id")
        body = line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                _line_error(
                    "missing_required_parameter",
                    "Each request needs a string custom_id.",
                    number,
                    "custom_id",
                )
            )
        elif custom_id in seen:
            errors.append(
                _line_error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. The custom_id "
                    "parameter must be unique for each request in a batch.",
                    number,
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if line.get("method") != "POST":
            errors.append(
                _line_error("invalid_method", "The method of every request must be POST.", number, "method")
            )
        if line.get("url") != endpoint:
            errors.append(
                _line_error(
                    "invalid_url",
                    f"The URL provided for this request does not match the batch endpoint {endpoint}.",
                    number,
                    "url",
                )
            )
        if not isinstance(body, dict):
            errors.append(
                _line_error(
                    "missing_required_parameter", "Each request needs a JSON object body.", number, "body"
                )
            )
        else:
            line_model = body.get("model")
            if model is None and isinstance(line_model, str):
                model = line_model
            elif isinstance(line_model, str) and line_model != model:
                errors.append(
                    _line_error(
                        "mismatched_model",
                        f"The model {line_model!r} differs from {model!r} used by earlier lines; "
                        "all requests in a batch must use the same model.",
                        number,
                        "body.model",
                    )
                )
        lines.append(line)
    if not lines and not errors:
        errors.append(
            _line_error(
                "empty_file",
                "The batch input file is empty. Please ensure that the batch contains at least one request.",
                None,
            )
        )
    if len(lines) > MAX_BATCH_LINES:
        errors.append(
            _line_error(
                "too_many_requests",
                f"The batch input file has {len(lines)} requests; a batch holds at most {MAX_BATCH_LINES}.",
                None,
            )
        )
    return lines, errors[:MAX_REPORTED_ERRORS]


class BatchStore:
    """Files and batches of one server, and the tasks processing the batches."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        """Stop processing every batch (server shutdown or reset)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def add_file(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, data)
        self.files[stored.id] = stored
        self.state.counters.files_stored = len(self.files)
        return stored

    def delete_file(self, file_id: str) -> StoredFile:
        """Delete a file (404 when there is none), as ``DELETE /v1/files/{file_id}`` does."""
        stored = self.get_file(file_id)
        del self.files[stored.id]
        self.state.counters.files_deleted += 1
        self.state.counters.files_stored = len(self.files)
        return stored

    def get_file(self, file_id: str) -> StoredFile:
        try:
            return self.files[file_id]
        except KeyError:
            raise ApiError(404, f"No such File object: {file_id}", param="id") from None

    def get_batch(self, batch_id: str) -> BatchJob:
        try:
            return self.batches[batch_id]
        except KeyError:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id") from None

    def create(
        self, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None
    ) -> BatchJob:
        job = BatchJob(new_id("batch_"), input_file_id, endpoint, window, metadata)
        self.batches[job.id] = job
        counters = self.state.counters
        counters.batches_created += 1
        live = sum(1 for b in self.batches.values() if b.status not in TERMINAL_STATUSES)
        counters.batches_in_flight_max = max(counters.batches_in_flight_max, live)
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: BatchJob) -> None:
        opts = self.state.opts
        delay = opts.batch_delay_s
        await asyncio.sleep(0.1 * delay)
        if job.cancel_requested:
            job.set_status("cancelled")
            return
        source = self.files.get(job.input_file_id)
        if source is None:  # deleted before the batch started
            job.errors = [_line_error("invalid_file", f"No such File object: {job.input_file_id}", None)]
            job.set_status("failed")
            return
        lines, errors = validate_batch_file(source.data, job.endpoint)
        if errors:
            job.errors = errors
            job.set_status("failed")
            return
        job.total = len(lines)
        job.model = lines[0]["body"].get("model")
        job.set_status("in_progress")
        stop_at = math.floor(opts.batch_expire_fraction * len(lines)) if opts.batch_expire else len(lines)
        pace_s = 0.8 * delay / len(lines)
        outputs: list[dict[str, Any]] = []
        error_lines: list[dict[str, Any]] = []
        entries: list[LedgerEntry] = []
        done = 0
        for i, line in enumerate(lines):
            if i >= stop_at or job.cancel_requested:
                break
            if pace_s:
                await asyncio.sleep(pace_s)
            elif i % 256 == 255:
                await asyncio.sleep(0)
            if job.cancel_requested:
                break
            self._answer(job, line, outputs, error_lines, entries)
            done = i + 1
        rest = lines[done:]
        if job.cancel_requested:
            error_lines += [
                _unexecuted(
                    line, "batch_cancelled", "This request was not executed because the batch was cancelled."
                )
                for line in rest
            ]
            final = "cancelled"
        elif rest:
            error_lines += [
                _unexecuted(
                    line,
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                )
                for line in rest
            ]
            final = "expired"
        else:
            job.set_status("finalizing")
            await asyncio.sleep(0.1 * delay)
            final = "completed"
        if outputs:
            job.output_file_id = self._write(f"{job.id}_output.jsonl", outputs).id
        if error_lines:
            job.error_file_id = self._write(f"{job.id}_error.jsonl", error_lines).id
        for entry in entries:
            entry.delivered = True
        job.set_status(final)

    def _write(self, filename: str, rows: list[dict[str, Any]]) -> StoredFile:
        return self.add_file(filename, "batch_output", b"".join(dumps(row) + b"\n" for row in rows))

    def _answer(
        self,
        job: BatchJob,
        line: dict[str, Any],
        outputs: list[dict[str, Any]],
        error_lines: list[dict[str, Any]],
        entries: list[LedgerEntry],
    ) -> None:
        st = self.state
        custom_id: str = line["custom_id"]
        request_id = new_id("req_")
        try:
            req = parse_chat_body(line["body"], st.opts)
            computed: Computed = st.answerer.compute(req)
            if st.opts.batch_fail_rate and st.rng.random() < st.opts.batch_fail_rate:
                raise ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type="server_error",
                )
        except ApiError as err:
            job.failed += 1
            error_lines.append(
                {
                    "id": new_id("batch_req_"),
                    "custom_id": custom_id,
                    "response": {"status_code": err.status, "request_id": request_id, "body": err.body()},
                    "error": None,
                }
            )
            return
        entries.append(
            st.ledger.bill(
                key=req.key,
                model=req.answered_by or req.model,
                prompt_tokens=computed.prompt_tokens,
                completion_tokens=computed.completion_tokens,
                cached_tokens=computed.cached_tokens,
                custom_id=custom_id,
                kind="batch",
            )
        )
        st.counters.batch_lines += 1
        job.completed += 1
        job.input_tokens += computed.prompt_tokens
        job.output_tokens += computed.completion_tokens
        outputs.append(
            {
                "id": new_id("batch_req_"),
                "custom_id": custom_id,
                "response": {
                    "status_code": 200,
                    "request_id": request_id,
                    "body": st.answerer.completion(req, computed),
                },
                "error": None,
            }
        )

    def cancel(self, batch_id: str) -> BatchJob:
        job = self.get_batch(batch_id)
        if job.status in ("validating", "in_progress"):
            job.cancel_requested = True
            job.set_status("cancelling")
        elif job.status not in ("cancelling", "cancelled"):
            raise ApiError(400, f"Cannot cancel a batch with status '{job.status}'.", code="invalid_request")
        return job


def _unexecuted(line: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {
        "id": new_id("batch_req_"),
        "custom_id": line["custom_id"],
        "response": None,
        "error": {"code": code, "message": message},
    }


def _store(request: web.Request) -> BatchStore:
    from .app import STATE

    st = request.app[STATE]
    st.check_auth(request)
    return st.batches


def _limit(request: web.Request, default: int = 20, most: int = 100) -> int:
    raw = request.query.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if not 1 <= limit <= most:
        raise ApiError(
            400, f"Invalid 'limit': expected an integer in [1, {most}], got {raw!r}.", param="limit"
        )
    return limit


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }


async def upload_file(request: web.Request) -> web.Response:
    """``POST /v1/files`` (multipart: ``file``, ``purpose``)."""
    store = _store(request)
    form = await request.post()
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "Missing file: send it as the multipart field 'file'.", param="file")
    if not isinstance(purpose, str) or purpose not in FILE_PURPOSES:
        raise ApiError(
            400, f"Invalid 'purpose' {purpose!r}: expected one of {sorted(FILE_PURPOSES)}.", param="purpose"
        )
    data = upload.file.read()
    if purpose == "batch":
        if not upload.filename.endswith(".jsonl"):
            raise ApiError(400, "A batch input file must be a .jsonl file.", param="file")
        if len(data) > MAX_BATCH_FILE_BYTES:
            raise ApiError(
                400, f"A batch input file holds at most {MAX_BATCH_FILE_BYTES} bytes.", param="file"
            )
    store.state.counters.files_uploaded += 1
    return json_response(store.add_file(upload.filename, purpose, data).obj())


async def list_files(request: web.Request) -> web.Response:
    """``GET /v1/files`` (newest first; ``purpose``, ``after``, ``limit`` up to 10,000)."""
    store = _store(request)
    purpose = request.query.get("purpose")
    items = [f.obj() for f in reversed(store.files.values()) if purpose is None or f.purpose == purpose]
    return json_response(_page(items, request.query.get("after"), _limit(request, 10_000, 10_000)))


async def retrieve_file(request: web.Request) -> web.Response:
    """``GET /v1/files/{file_id}``."""
    return json_response(_store(request).get_file(request.match_info["file_id"]).obj())


async def file_content(request: web.Request) -> web.Response:
    """``GET /v1/files/{file_id}/content``: the raw bytes."""
    stored = _store(request).get_file(request.match_info["file_id"])
    return web.Response(body=stored.data, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    """``DELETE /v1/files/{file_id}``."""
    stored = _store(request).delete_file(request.match_info["file_id"])
    return json_response({"id": stored.id, "object": "file", "deleted": True})


async def create_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches``."""
    store = _store(request)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request. Send valid JSON.")
    endpoint = body.get("endpoint")
    window = body.get("completion_window")
    file_id = body.get("input_file_id")
    metadata = body.get("metadata")
    if endpoint != BATCH_ENDPOINT:
        raise ApiError(
            400,
            f"Invalid 'endpoint' {endpoint!r}: the fake server batches {BATCH_ENDPOINT} only.",
            param="endpoint",
        )
    if window != "24h":
        raise ApiError(
            400, f"Invalid 'completion_window' {window!r}: expected '24h'.", param="completion_window"
        )
    if not isinstance(file_id, str):
        raise ApiError(
            400, "Missing 'input_file_id'.", param="input_file_id", code="missing_required_parameter"
        )
    stored = store.get_file(file_id)
    if stored.purpose != "batch":
        raise ApiError(
            400,
            f"File {file_id} has purpose {stored.purpose!r}; a batch input needs 'batch'.",
            param="input_file_id",
        )
    if metadata is not None and not isinstance(metadata, dict):
        raise ApiError(400, "Invalid 'metadata': expected an object of strings.", param="metadata")
    return json_response(store.create(file_id, endpoint, window, metadata).obj())


async def retrieve_batch(request: web.Request) -> web.Response:
    """``GET /v1/batches/{batch_id}``."""
    return json_response(_store(request).get_batch(request.match_info["batch_id"]).obj())


async def cancel_batch(request: web.Request) -> web.Response:
    """``POST /v1/batches/{batch_id}/cancel``."""
    return json_response(_store(request).cancel(request.match_info["batch_id"]).obj())


async def list_batches(request: web.Request) -> web.Response:
    """``GET /v1/batches`` (newest first; ``after``, ``limit`` 1..100, default 20)."""
    store = _store(request)
    items = [job.obj() for job in reversed(store.batches.values())]
    return json_response(_page(items, request.query.get("after"), _limit(request)))


def add_batch_routes(router: web.UrlDispatcher, prefix: str, wrap: Callable[[Handler], Handler]) -> None:
    """Register the Files and Batches routes under ``prefix`` ("/v1" or "")."""
    router.add_post(f"{prefix}/files", wrap(upload_file))
    router.add_get(f"{prefix}/files", wrap(list_files))
    router.add_get(f"{prefix}/files/{{file_id}}", wrap(retrieve_file))
    router.add_get(f"{prefix}/files/{{file_id}}/content", wrap(file_content))
    router.add_delete(f"{prefix}/files/{{file_id}}", wrap(delete_file))
    router.add_post(f"{prefix}/batches", wrap(create_batch))
    router.add_get(f"{prefix}/batches", wrap(list_batches))
    router.add_get(f"{prefix}/batches/{{batch_id}}", wrap(retrieve_batch))
    router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", wrap(cancel_batch))
