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

Modules: files, jobs and input validation in :mod:`tracegen.testing.batch_files`, the HTTP handlers in
:mod:`tracegen.testing.batch_routes`; this module (the :class:`BatchStore`) re-exports ``add_batch_routes``.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from .batch_files import TERMINAL_STATUSES, BatchJob, StoredFile, _line_error, validate_batch_file
from .batch_routes import add_batch_routes
from .chat import Computed, parse_chat_body
from .ledger import LedgerEntry
from .wire import ApiError, dumps, new_id

if TYPE_CHECKING:
    from .app import FakeState

__all__ = ["BatchStore", "add_batch_routes"]


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
