"""Writing an export: one config's rows to Parquet shards and JSONL, and the tally the card is built from."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from ..rundir import json_line
from .export_formats import RecordDict
from .features import Features

__all__ = ["PARQUET_COMPRESSION"]

PARQUET_COMPRESSION = "zstd"


class _ShardWriter:
    """One config's rows → Parquet shards of ``shard_rows`` rows, flushed every ``batch_rows`` rows; JSONL."""

    def __init__(self, root: Path, features: Features, shard_rows: int, batch_rows: int, jsonl: bool):
        self.root = root
        self.schema = features.arrow_schema  # carries the datasets features as schema metadata
        self.shard_rows, self.batch_rows = shard_rows, batch_rows
        self.rows = 0
        self.nbytes = 0
        """Arrow (in-memory) size of the rows: ``datasets``' ``num_bytes``."""
        self._buffer: list[bytes] = []
        """JSON lines of the rows not yet parsed (the Arrow table is parsed from them in C++)."""
        self._buffer_bytes = 0
        self._parts: list[pa.Table] = []
        """The parsed parts of the row group being filled."""
        self._batch = 0
        """Rows in the row group being filled (parsed or not)."""
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0
        (root / "data").mkdir(parents=True)
        self._jsonl: IO[bytes] | None = (root / "train.jsonl").open("wb") if jsonl else None

    def add(self, row: dict[str, Any]) -> None:
        line = json_line(row)
        self._buffer.append(line)
        self._buffer_bytes += len(line)
        self.rows += 1
        self._batch += 1
        if self._batch >= self.batch_rows or self._in_shard + self._batch >= self.shard_rows:
            self._flush()
        elif self._buffer_bytes >= _PART_BYTES:
            self._parse_part()

    def _parse_part(self) -> None:
        """Parse the pending lines into a part of the row group, and write them to train.jsonl."""
        data = b"".join(self._buffer)
        if self._jsonl is not None:
            self._jsonl.write(data)  # a part at a time: the same bytes as line by line
        self._parts.append(_arrow_table(self._buffer, self.schema, data))
        self._buffer.clear()
        self._buffer_bytes = 0

    def _flush(self) -> None:
        if not self._batch and self._shards:
            return
        if self._writer is None:
            path = self.root / "data" / f"train-{len(self._shards):05d}.parquet.partial"
            self._shards.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression=PARQUET_COMPRESSION)
        if self._buffer or not self._parts:
            self._parse_part()
        # one chunk per column, as one parse of the whole batch gives: the row group's pages are the same
        parts, self._parts = self._parts, []
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()
        del parts
        self.nbytes += table.nbytes
        self._writer.write_table(table)
        self._in_shard += self._batch
        self._batch = 0
        if self._in_shard >= self.shard_rows:
            self._writer.close()
            self._writer, self._in_shard = None, 0

    def close(self) -> list[Path]:
        """Finish the last shard and name the shards ``-of-N``."""
        if self._batch or not self._shards:
            self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
        n = len(self._shards)
        final = []
        for i, path in enumerate(self._shards):
            target = path.with_name(f"train-{i:05d}-of-{n:05d}.parquet")
            path.rename(target)
            final.append(target)
        return final

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _arrow_table(lines: list[bytes], schema: pa.Schema, data: bytes | None = None) -> pa.Table:
    """The rows (JSON lines) as one Arrow table of ``schema``: what ``Table.from_pylist`` gives.

    Parsed by pyarrow's JSON reader: from_pylist would import pandas (~0.3 s) for its array-like check,
    and the rows are serialised for train.jsonl anyway (``data``: the lines joined, when the caller has them). Anything that reader refuses goes through
    from_pylist, so the table is always the same (tests/publish/test_export_fast.py compares the two).
    """
    if data is None:
        data = b"".join(lines)
    if len(data) < _JSON_BLOCK_MAX:
        parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        read = pa_json.ReadOptions(use_threads=False, block_size=max(len(data), 1) + 1)
        try:
            table = pa_json.read_json(pa.BufferReader(data), read_options=read, parse_options=parse)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        else:
            if table.num_rows == len(lines) and table.schema.equals(schema):
                return table.combine_chunks().replace_schema_metadata(schema.metadata)
    return pa.Table.from_pylist([json.loads(line) for line in lines], schema=schema)


def warm_up() -> None:
    """Pay pyarrow's one-time set-up now: its JSON reader and the Parquet writer with our compression cost
    ~45 ms on first use. A run calls this while it waits for answers, so its export does not."""
    schema = pa.schema([pa.field("text", pa.string())])
    table = _arrow_table([b'{"text": "warm"}\n'], schema)
    with pq.ParquetWriter(pa.BufferOutputStream(), schema, compression=PARQUET_COMPRESSION) as writer:
        writer.write_table(table)


_PART_BYTES = 1 << 20
"""JSON lines parsed at a time: memory reused from part to part, not a whole row group of text held."""
_JSON_BLOCK_MAX = 2**31 - 2
"""pyarrow's JSON block size is an int32: larger buffers go through from_pylist."""


_VERDICT = {True: "agrees", False: "disagrees", None: "unknown"}


@dataclass
class _Tally:
    """What ended up in the dataset: counts the card's tables are built from."""

    rows: int = 0
    by_submix: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_model: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_system: dict[tuple[int | None, str, str | None], int] = field(default_factory=dict)
    agreement: Counter[str] = field(default_factory=Counter)
    finish_reason: Counter[str] = field(default_factory=Counter)
    erased: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, r: RecordDict) -> None:
        """Count one exported record (a record dict, :meth:`Record.to_dict`'s keys)."""
        self.rows += 1
        self.by_submix[r["submix"]] += 1
        self.by_stage[r["stage"]] += 1
        self.by_model[(r["model"], r["model_returned"])] += 1
        train = r["train_system_prompt"]
        key = (r["system_message_id"], r["system_prompt"], train)
        self.by_system[key] = self.by_system.get(key, 0) + 1
        self.agreement[_VERDICT[r["agrees_with_target"]]] += 1
        self.finish_reason[r["finish_reason"] or "unknown"] += 1
        self.erased += train is not None
        self.prompt_tokens += r["prompt_tokens"]
        self.completion_tokens += r["completion_tokens"]
        self.cost_usd += r["cost_usd"]

    def to_dict(self) -> dict[str, Any]:
        systems = sorted(self.by_system.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, -kv[1]))
        return {
            "rows": self.rows,
            "by_submix": dict(self.by_submix.most_common()),
            "by_stage": dict(self.by_stage),
            "by_model": [
                {"model": m, "model_returned": mr, "rows": n} for (m, mr), n in self.by_model.most_common()
            ],
            "by_system_message": [
                {"id": sid, "text": text, "train_text": train, "rows": n} for (sid, text, train), n in systems
            ],
            "answer_check": {k: self.agreement.get(k, 0) for k in ("agrees", "disagrees", "unknown")},
            "finish_reason": dict(self.finish_reason.most_common()),
            "prompt_erasure_rows": self.erased,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 6),
        }
