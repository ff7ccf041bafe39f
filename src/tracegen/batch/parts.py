"""Batch input parts: one request per planned record, packed into files within the API's limits.

A part's requests are kept in ``batches/part-NNNNN.jsonl`` as ``{"custom_id", "attempt", "request_key",
["cap", "cut",] "record"}`` lines (``cap``/``cut``: a length retry, see :class:`Item`); the bytes uploaded to the Files API are a pure function of those lines and the teacher
settings (which the run manifest pins), so a resume re-creates them byte for byte (checked by sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..config import RunConfig
from ..engine import request_key
from ..engine.runner import PROMPT_MARGIN, PROMPT_MARGIN_TOKENS
from ..errors import RunDirError
from ..planning.params import with_cap
from ..planning.plan import request_body
from ..planning.tokens import Pricing, count_chat_tokens
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
    """One request of a part: the record, its cache key, its worst-case cost and its upload line."""

    rec: Record
    key: str
    attempt: int
    line: bytes
    res_usd: float
    res_tokens: int
    custom_id: str
    chain: list[dict[str, Any]] = field(default_factory=list)
    """Errors of earlier attempts (this session), for failed.jsonl."""
    cap: int | None = None
    """A length retry's larger completion cap (``retry_length``); None: the config's ``max_tokens``."""
    cut: dict[str, Any] | None = None
    """A length retry's first answer, cut by length and billed: content, finish_reason, model_returned,
    prompt_tokens, completion_tokens, cost_usd (kept if the retry fails; its cost adds to the record's)."""

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.key[:32])

    @classmethod
    def make(
        cls,
        rec: Record,
        config: RunConfig,
        pricing: Pricing,
        encoding: str,
        *,
        attempt: int = 1,
        custom_id: str | None = None,
        cap: int | None = None,
        cut: dict[str, Any] | None = None,
    ) -> Item:
        """Body, key and worst-case reservation exactly as the online runner computes them.

        ``cap`` (a length retry) raises the completion cap in the uploaded body; the key stays the
        record's (a length retry answers the same planned request).
        """
        body = request_body(rec, config)
        key = request_key(body)
        max_tokens = config.max_tokens
        if cap is not None:
            body = with_cap(body, cap)
            max_tokens = cap
        prompt_tokens = rec.prompt_tokens or count_chat_tokens(body["messages"], encoding)
        worst_prompt = math.ceil(prompt_tokens * PROMPT_MARGIN) + PROMPT_MARGIN_TOKENS
        cid = custom_id or rec.id
        return cls(
            rec=rec,
            key=key,
            attempt=attempt,
            line=upload_line(cid, body),
            res_usd=pricing.cost_usd(worst_prompt, max_tokens),
            res_tokens=worst_prompt + max_tokens,
            custom_id=cid,
            cap=cap,
            cut=cut,
        )


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


def read_part(path: Path, config: RunConfig, pricing: Pricing, encoding: str) -> list[Item]:
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
                config,
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
