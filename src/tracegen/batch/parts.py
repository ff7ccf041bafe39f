"""Batch input parts: one request per planned record, packed into files within the API's limits.

A part's requests are kept in ``batches/part-NNNNN.jsonl`` as ``{"custom_id", "attempt", "request_key",
["cap", "cut",] "record"}`` lines (``cap``/``cut``: a length retry, see :class:`Item`); the bytes uploaded to the Files API are a pure function of those lines and the teacher
settings (which the run manifest pins), so a resume re-creates them byte for byte (checked by sha256).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..engine.core import Request
from ..engine.settings import Teacher
from ..errors import RunDirError
from ..planning.tokens import Pricing
from ..records import Record
from ..rundir import write_jsonl

__all__ = [
    "BATCH_ENDPOINT",
    "MAX_BYTES_PER_FILE",
    "MAX_REQUESTS_PER_FILE",
    "Item",
    "Part",
    "read_part",
    "upload_line",
    "write_part",
]

#: The Batch API's limits on one input file.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024
BATCH_ENDPOINT: Final = "/v1/chat/completions"


def upload_line(custom_id: str, body: dict[str, Any]) -> bytes:
    """One Batch API input line (newline included)."""
    line = {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass(slots=True)
class Item:
    """One request of a part: the core :class:`~tracegen.engine.core.Request` (record, key, worst-case
    cost), its upload line and custom id, and what this session knows of its attempts."""

    req: Request
    attempt: int
    line: bytes
    custom_id: str
    chain: list[dict[str, Any]] = field(default_factory=list)
    """Errors of earlier attempts (this session), for failed.jsonl."""
    cap: int | None = None
    """A length retry's larger completion cap (``retry_length``); None: the teacher's ``max_tokens``."""
    cut: dict[str, Any] | None = None
    """A length retry's first answer, cut by length and billed: content, finish_reason, model_returned,
    prompt_tokens, completion_tokens, cost_usd (kept if the retry fails; its cost adds to the record's)."""

    @property
    def rec(self) -> Record:
        return self.req.rec

    @property
    def key(self) -> str:
        return self.req.key

    @property
    def digest(self) -> bytes:
        return self.req.digest

    @property
    def res_usd(self) -> float:
        return self.req.res_usd

    @property
    def res_tokens(self) -> int:
        return self.req.res_tokens

    @classmethod
    def make(
        cls,
        rec: Record,
        teacher: Teacher,
        pricing: Pricing,
        encoding: str,
        *,
        attempt: int = 1,
        custom_id: str | None = None,
        cap: int | None = None,
        cut: dict[str, Any] | None = None,
    ) -> Item:
        """The record's request as the core builds it (``cap``: a length retry's larger cap), as a line."""
        req = Request(rec, teacher, pricing, encoding, cap=cap, batch=True)
        cid = custom_id or rec.id
        return cls(req=req, attempt=attempt, line=upload_line(cid, req.body), custom_id=cid, cap=cap, cut=cut)


@dataclass
class Part:
    """A group of items to be uploaded as one batch input file."""

    number: int
    items: list[Item]

    @property
    def data(self) -> bytes:
        return b"".join(it.line for it in self.items)


def write_part(path: Path, items: Iterable[Item]) -> None:
    """The part's requests, atomically (temp file, fsync, rename, directory fsync)."""
    rows: list[dict[str, Any]] = []
    for it in items:
        row: dict[str, Any] = {"custom_id": it.custom_id, "attempt": it.attempt, "request_key": it.key}
        if it.cap is not None:
            row["cap"] = it.cap
            row["cut"] = it.cut
        row["record"] = it.rec.to_dict()
        rows.append(row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{path.parent}: cannot create ({e.strerror}); check permissions") from None
    write_jsonl(path, rows)


def read_part(path: Path, teacher: Teacher, pricing: Pricing, encoding: str) -> list[Item]:
    """Items of a part file, rebuilt with the same custom ids, attempts and upload lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot read the requests of a batch part ({e.strerror}); the batch journal names "
            "this file: restore it, or use a new --output-dir"
        ) from None
    items: list[Item] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rec = Record.from_dict(row["record"])
            cap = row.get("cap")
            item = Item.make(
                rec,
                teacher,
                pricing,
                encoding,
                attempt=int(row["attempt"]),
                custom_id=str(row["custom_id"]),
                cap=int(cap) if cap is not None else None,
                cut=row.get("cut"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise RunDirError(
                f"{path}:{lineno}: not a batch part line ({e}); use a new --output-dir"
            ) from None
        if item.key != row.get("request_key"):
            raise RunDirError(
                f"{path}:{lineno}: the request differs from the one submitted (teacher settings changed?); "
                "rerun with the settings of this run directory, or use a new --output-dir"
            )
        items.append(item)
    return items


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
