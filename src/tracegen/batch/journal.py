"""batches.jsonl: the durable record of every Batch API part of a run directory.

Each step is appended and fsynced *the moment it exists*, so a crash never orphans a paid batch::

    {"event": "run", "run_id": R, "time": ISO}                     first line: this run's id (batch metadata)
    {"event": "part", "part": N, "session": S, "requests": n, "bytes": b, "sha256": h,
     "reserve_usd": x, "reserve_tokens": t, "filename": F, "time": ISO}      intent, before the upload
    {"event": "uploaded", "part": N, "file_id": ID}                          right after the upload
    {"event": "created", "part": N, "batch_id": ID}                          right after batches.create
    {"event": "collected", "part": N, "status": ..., "cost_usd": c, ...}     results merged (terminal)
    {"event": "abandoned", "part": N, "reason": ...}                         never became a batch (terminal)
    {"event": "cleaned", "part": N, "file_ids": [...]}            our files deleted on the provider

``session`` names the part's own session in ledger.jsonl, which holds its worst-case cost until it is
collected. The part's requests live in ``batches/part-NNNNN.jsonl`` (written before the intent line). A part that is
neither collected nor abandoned is *outstanding*: on resume it is polled (batch id known) or resolved by
listing batches and files (crash between the steps). A torn last line (kill -9 mid-write) is dropped.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.budget import utc_now_iso
from ..errors import RunDirError
from ..rundir import BATCH_PARTS, BATCHES, open_append, truncate_durably

__all__ = ["JOURNAL_NAME", "PARTS_DIR", "Journal", "PartState"]

JOURNAL_NAME = BATCHES
PARTS_DIR = BATCH_PARTS


@dataclass
class PartState:
    """What the journal says about one part."""

    part: int
    session: str
    requests: int
    bytes: int
    sha256: str
    reserve_usd: float
    reserve_tokens: int
    filename: str
    time: str
    file_id: str | None = None
    batch_id: str | None = None
    done: str | None = None
    """"collected" | "abandoned" once terminal, else None (outstanding)."""
    final: dict[str, Any] = field(default_factory=dict)
    """The terminal line (status, request counts, cost) once done."""
    cleaned: bool = False
    """Our input/output/error files of this part were deleted on the provider (after collection)."""

    @property
    def outstanding(self) -> bool:
        return self.done is None


class Journal:
    """Append-only, fsynced ``batches.jsonl`` and its folded state (``run_id``, ``parts``)."""

    def __init__(self, run_dir: Path, *, readonly: bool = False) -> None:
        self.path = run_dir / JOURNAL_NAME
        self.parts_dir = run_dir / PARTS_DIR
        self.run_id: str | None = None
        self.run_time: str | None = None
        self.parts: dict[int, PartState] = {}
        self._fd: int | None = None
        self._readonly = readonly
        self._load()

    # ---- reading --------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            raise RunDirError(f"{self.path}: cannot read the batch journal ({e.strerror})") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):  # torn last line from a crash mid-write (or a write in progress, when reading)
            if not self._readonly:
                self._truncate(end)
            data = data[:end]
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise RunDirError(
                    f"{self.path}:{lineno}: corrupt batch journal line; the state of this run's batches is "
                    "unknown: check them with the provider's dashboard, then move the file aside"
                ) from None
            self._apply(entry)

    def _truncate(self, size: int) -> None:
        try:
            truncate_durably(self.path, size)
        except OSError as e:
            raise RunDirError(f"{self.path}: cannot repair a torn last line ({e.strerror})") from None

    def _apply(self, e: dict[str, Any]) -> None:
        event = e.get("event")
        if event == "run":
            self.run_id = str(e["run_id"])
            self.run_time = str(e.get("time", ""))
            return
        n = int(e.get("part", -1))
        if event == "part":
            self.parts[n] = PartState(
                part=n,
                session=str(e["session"]),
                requests=int(e["requests"]),
                bytes=int(e["bytes"]),
                sha256=str(e["sha256"]),
                reserve_usd=float(e["reserve_usd"]),
                reserve_tokens=int(e["reserve_tokens"]),
                filename=str(e["filename"]),
                time=str(e.get("time", "")),
            )
            return
        p = self.parts.get(n)
        if p is None:
            return
        if event == "uploaded":
            p.file_id = str(e["file_id"]) if e.get("file_id") else None
        elif event == "created":
            p.batch_id = str(e["batch_id"])
        elif event in ("collected", "abandoned"):
            p.done = event
            p.final = dict(e)
        elif event == "cleaned":
            p.cleaned = True

    # ---- writing --------------------------------------------------------------------------------------
    def append(self, entry: dict[str, Any]) -> None:
        """Write one line and fsync it before returning; fold it into the state."""
        assert not self._readonly, "a read-only journal is never written"
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            if self._fd is None:
                self._fd = open_append(self.path)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as e:
            raise RunDirError(
                f"{self.path}: cannot write the batch journal ({e.strerror or e}); free disk space, then "
                "rerun the same command: batches already created are found again by listing them"
            ) from None
        self._apply(entry)

    def ensure_run(self) -> str:
        """This run's id (written on first use): batches carry it in their metadata."""
        if self.run_id is None:
            self.append({"event": "run", "run_id": uuid.uuid4().hex, "time": utc_now_iso()})
        assert self.run_id is not None
        return self.run_id

    def next_part(self) -> int:
        return max(self.parts, default=0) + 1

    def part_path(self, part: int) -> Path:
        """The local file holding the part's requests (one line per request)."""
        return self.parts_dir / f"part-{part:05d}.jsonl"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
