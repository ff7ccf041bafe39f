"""Export a run directory as a ``datasets``-compatible dataset: Parquet shards + JSONL + a dataset card.

Layout written under ``output_dir`` (default ``RUN_DIR/dataset``)::

    README.md                                  the dataset card (tracegen.card), YAML ``configs:`` included
    export.json                                what was exported: configs, files, features, row tallies
    tracegen/{manifest,stats,plan_stats,clean_stats}.json   the run's public config and stats, scrubbed
    <config>/data/train-00000-of-0000N.parquet Parquet shards with explicit ``datasets.Features``
    <config>/train.jsonl                       the same rows as JSON lines (``jsonl=False`` to skip)

Formats, one config each (row ``i`` of every config is the same record, in plan order):

- ``openorca`` (default): id, system_prompt, question, response — exactly the Open-Orca/OpenOrca columns.
- ``full``: every :class:`~tracegen.records.Record` field with proper types (provenance, tokens, cost, ...).
- ``alpaca``: instruction (system message), input (question), output (response) — Dolphin's columns.
- ``sharegpt``: ``conversations`` = [{from: system|human|gpt, value}] — SlimOrca's layout; the system turn is
  left out when the system message is empty (Orca message 1).
- ``messages``: ``messages`` = [{role: system|user|assistant, content}] — TRL's conversational format, which
  ``SFTTrainer`` and chat templates load directly; the system turn is left out when the message is empty.

Prompt erasure (Orca 2): when a record has ``train_system_prompt``, the system column of openorca / alpaca /
sharegpt / messages holds it; ``full`` keeps both the teacher's ``system_prompt`` and ``train_system_prompt``.

Stages (progressive learning, Orca §4): when the records carry more than one ``stage`` value (e.g.
``gpt35`` then ``gpt4``), every format is split into one config per stage, named ``<format>-<stage>``
(``openorca-gpt4``); with a single stage the config is just ``<format>``.

Input: ``clean.jsonl`` (filtered, deduplicated, plan order) when present, else ``traces.jsonl`` reordered into
plan order with ``plan.jsonl`` (a second answer for the same id replaces the first). Memory stays bounded:
records stream through, rows are written in batches of ``batch_rows``, and plan ordering keeps two int64
arrays per record, not the records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from .._version import __version__
from ..errors import ConfigError, RunDirError
from ..records import Record
from ..rundir import (
    CLEAN_STATS,
    MANIFEST,
    PLAN_STATS,
    STATS,
    RunPaths,
    iter_records,
    open_read,
    read_json_if_exists,
)
from . import card as card_mod
from .features import Features, List, Value

if TYPE_CHECKING:
    import datasets

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "ExportResult",
    "ExportedConfig",
    "export",
    "features_for",
    "find_export_dir",
    "iter_rows",
    "load_manifest",
    "read_records",
    "run_summary",
]

logger = logging.getLogger(__name__)

DEFAULT_FORMAT = "openorca"
EXPORT_MANIFEST = "export.json"
PUBLIC_RUN_FILES = (MANIFEST, STATS, PLAN_STATS, CLEAN_STATS)
PARQUET_COMPRESSION = "zstd"

_S = Value("string")

# ---- formats -----------------------------------------------------------------------------------------------


def _system_for_training(r: Record) -> str:
    """Prompt erasure: the student's system message when the template set gives one, else the teacher's."""
    return r.train_system_prompt if r.train_system_prompt is not None else r.system_prompt


def _row_openorca(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "system_prompt": _system_for_training(r),
        "question": r.question,
        "response": r.response,
    }


def _row_alpaca(r: Record) -> dict[str, Any]:
    return {"instruction": _system_for_training(r), "input": r.question, "output": r.response}


def _row_sharegpt(r: Record) -> dict[str, Any]:
    system = _system_for_training(r)
    turns: list[dict[str, str | None]] = [{"from": "system", "value": system}] if system else []
    turns += [{"from": "human", "value": r.question}, {"from": "gpt", "value": r.response}]
    return {"conversations": turns}


def _row_messages(r: Record) -> dict[str, Any]:
    system = _system_for_training(r)
    turns: list[dict[str, str | None]] = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": r.question}, {"role": "assistant", "content": r.response}]
    return {"messages": turns}


_FULL_COLUMNS: dict[str, Value] = {
    "id": _S,
    "submix": _S,
    "system_prompt": _S,
    "train_system_prompt": _S,
    "system_message_id": Value("int32"),
    "question": _S,
    "response": _S,
    "target": _S,
    "agrees_with_target": Value("bool"),
    "task_name": _S,
    "template_type": _S,
    "source": _S,
    "stage": _S,
    "model": _S,
    "model_returned": _S,
    "finish_reason": _S,
    "prompt_tokens": Value("int64"),
    "completion_tokens": Value("int64"),
    "cost_usd": Value("float64"),
    "key": _S,
}


def _row_full(r: Record) -> dict[str, Any]:
    return {name: getattr(r, name) for name in _FULL_COLUMNS}


@dataclass(frozen=True)
class Format:
    """One export format: its explicit features and how a Record becomes a row."""

    name: str
    features: Features
    row: Callable[[Record], dict[str, Any]]
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "openorca",
            Features({"id": _S, "system_prompt": _S, "question": _S, "response": _S}),
            _row_openorca,
            "id, system_prompt, question, response — the Open-Orca/OpenOrca columns",
        ),
        Format(
            "full",
            Features(_FULL_COLUMNS),
            _row_full,
            "every record field: provenance, FLAN target, answer check, tokens, cost",
        ),
        Format(
            "alpaca",
            Features({"instruction": _S, "input": _S, "output": _S}),
            _row_alpaca,
            "instruction (system message), input (question), output (response) — as Dolphin",
        ),
        Format(
            "sharegpt",
            Features({"conversations": List({"from": _S, "value": _S})}),
            _row_sharegpt,
            "conversations: [{from: system|human|gpt, value}] — as SlimOrca",
        ),
        Format(
            "messages",
            Features({"messages": List({"role": _S, "content": _S})}),
            _row_messages,
            "messages: [{role: system|user|assistant, content}] — TRL's conversational format (SFTTrainer)",
        ),
    )
}


def features_for(fmt: str) -> datasets.Features:
    """The explicit ``datasets.Features`` of an export format (imports ``datasets``; export itself does not)."""
    import datasets

    return datasets.Features.from_dict(_format(fmt).features.to_dict())


def _format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown export format {name!r}; choose from {', '.join(FORMATS)} (--format)"
        ) from None


# ---- reading records in plan order -------------------------------------------------------------------------


def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


def _plan_index(plan_path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Sorted id hashes of plan.jsonl and their plan positions (two int64 arrays, ~16 bytes per record)."""
    hashes = array("q")
    with open_read(plan_path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                hashes.append(_hash64(_line_id(line, plan_path, lineno)))
    keys = np.frombuffer(hashes, dtype=np.int64).copy()
    del hashes
    order = np.argsort(keys, kind="stable")
    return keys[order], order.astype(np.int64)


def _line_id(line: bytes, path: Path, lineno: int) -> str:
    try:
        rid = json.loads(line)["id"]
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path}:{lineno}: not a record line ({e}); fix or remove the line") from None
    if not isinstance(rid, str):
        raise RunDirError(f"{path}:{lineno}: field 'id' is not a string; fix or remove the line")
    return rid


def _traces_in_plan_order(traces: Path, plan: Path | None) -> Iterator[Record]:
    """traces.jsonl is appended in completion order; yield it in plan order (ids not in the plan go last)."""
    offsets, ranks = array("q"), array("q")
    if plan is not None and plan.exists():
        sorted_keys, positions = _plan_index(plan)
    else:
        sorted_keys, positions = np.empty(0, np.int64), np.empty(0, np.int64)
    n_plan = len(sorted_keys)
    with open_read(traces) as f:
        pos = 0
        for lineno, line in enumerate(f, 1):
            if line.strip():
                key = _hash64(_line_id(line, traces, lineno))
                i = int(np.searchsorted(sorted_keys, key))
                found = i < n_plan and sorted_keys[i] == key
                offsets.append(pos)
                ranks.append(int(positions[i]) if found else n_plan + lineno)
            pos += len(line)
    off = np.frombuffer(offsets, dtype=np.int64)
    rank = np.frombuffer(ranks, dtype=np.int64)
    del offsets, ranks
    order = np.lexsort((off, rank))  # by plan rank, then file position
    with open_read(traces) as f:
        for j, idx in enumerate(order):
            # a later answer to the same id (same rank) supersedes the earlier one
            if j + 1 < len(order) and rank[order[j + 1]] == rank[idx] and rank[idx] < n_plan:
                continue
            f.seek(int(off[idx]))
            yield _parse_record(f.readline(), traces, None)


def _parse_record(line: bytes, path: Path, lineno: int | None) -> Record:
    where = f"{path}:{lineno}" if lineno else str(path)
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return Record.from_dict(data)
    except (ValueError, TypeError) as e:
        raise RunDirError(f"{where}: not a Record line ({e}); fix or remove the line") from None


def read_records(run_dir: str | Path) -> tuple[str, Iterator[Record]]:
    """Answered records to export, in plan order: ``(source file name, iterator)``.

    Reads ``clean.jsonl`` (written by post-processing, already in plan order) when present, else
    ``traces.jsonl`` put into plan order with ``plan.jsonl``.
    """
    run = Path(run_dir)
    clean, traces = RunPaths(run).clean, RunPaths(run).traces
    if clean.exists():
        return clean.name, iter_records(clean)
    if traces.exists():
        return traces.name, _traces_in_plan_order(traces, RunPaths(run).plan)
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    raise RunDirError(f"{run}: nothing to export (no clean.jsonl or traces.jsonl); run `tracegen run` first")


# ---- writing -----------------------------------------------------------------------------------------------


class _ShardWriter:
    """One config's rows → Parquet shards of ``shard_rows`` rows, flushed every ``batch_rows`` rows; JSONL."""

    def __init__(self, root: Path, features: Features, shard_rows: int, batch_rows: int, jsonl: bool):
        self.root = root
        self.schema = features.arrow_schema  # carries the datasets features as schema metadata
        self.shard_rows, self.batch_rows = shard_rows, batch_rows
        self.rows = 0
        self.nbytes = 0
        """Arrow (in-memory) size of the rows: ``datasets``' ``num_bytes``."""
        self._buffer: list[str] = []
        """JSON lines of the rows not yet in Parquet (the Arrow table is parsed from them in C++)."""
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0
        (root / "data").mkdir(parents=True)
        self._jsonl: IO[str] | None = (root / "train.jsonl").open("w", encoding="utf-8") if jsonl else None

    def add(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self._buffer.append(line)
        if self._jsonl is not None:
            self._jsonl.write(line)
        self.rows += 1
        if len(self._buffer) >= self.batch_rows or self._in_shard + len(self._buffer) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer and self._shards:
            return
        if self._writer is None:
            path = self.root / "data" / f"train-{len(self._shards):05d}.parquet.partial"
            self._shards.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression=PARQUET_COMPRESSION)
        table = _arrow_table(self._buffer, self.schema)
        self.nbytes += table.nbytes
        self._writer.write_table(table)
        self._in_shard += len(self._buffer)
        self._buffer.clear()
        if self._in_shard >= self.shard_rows:
            self._writer.close()
            self._writer, self._in_shard = None, 0

    def close(self) -> list[Path]:
        """Finish the last shard and name the shards ``-of-N``."""
        if self._buffer or not self._shards:
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


def _arrow_table(lines: list[str], schema: pa.Schema) -> pa.Table:
    """The rows (JSON lines) as one Arrow table of ``schema``: what ``Table.from_pylist`` gives.

    Parsed by pyarrow's JSON reader: from_pylist would import pandas (~0.3 s) for its array-like check,
    and the rows are serialised for train.jsonl anyway. Anything that reader refuses goes through
    from_pylist, so the table is always the same (tests/test_export_fast.py compares the two).
    """
    data = "".join(lines).encode("utf-8")
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


_JSON_BLOCK_MAX = 2**31 - 2
"""pyarrow's JSON block size is an int32: larger buffers go through from_pylist."""


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

    def add(self, r: Record) -> None:
        self.rows += 1
        self.by_submix[r.submix] += 1
        self.by_stage[r.stage] += 1
        self.by_model[(r.model, r.model_returned)] += 1
        key = (r.system_message_id, r.system_prompt, r.train_system_prompt)
        self.by_system[key] = self.by_system.get(key, 0) + 1
        verdict = {True: "agrees", False: "disagrees", None: "unknown"}[r.agrees_with_target]
        self.agreement[verdict] += 1
        self.finish_reason[r.finish_reason or "unknown"] += 1
        self.erased += r.train_system_prompt is not None
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost_usd += r.cost_usd

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


@dataclass(frozen=True)
class ExportedConfig:
    """One dataset config of an export (a format, for one stage)."""

    name: str
    format: str
    stage: str
    rows: int
    data_files: tuple[str, ...]
    """Parquet shards, relative to the export dir (POSIX separators)."""
    jsonl_file: str | None
    features: dict[str, Any]
    num_bytes: int = 0
    """Arrow size of the rows (``datasets``' split ``num_bytes``)."""
    download_size: int = 0
    """Bytes of the Parquet shards."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "stage": self.stage,
            "rows": self.rows,
            "data_files": list(self.data_files),
            "jsonl_file": self.jsonl_file,
            "features": self.features,
            "num_bytes": self.num_bytes,
            "download_size": self.download_size,
        }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote."""

    output_dir: Path
    source: str
    """The run file the rows came from: clean.jsonl or traces.jsonl."""
    rows: int
    configs: tuple[ExportedConfig, ...]
    card_path: Path
    skipped_unanswered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "source": self.source,
            "rows": self.rows,
            "configs": {c.name: c.rows for c in self.configs},
            "card": str(self.card_path),
            "skipped_unanswered": self.skipped_unanswered,
        }


def _config_dir_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "unstaged"


def export(
    run_dir: str | Path,
    output_dir: str | Path | None = None,
    formats: Sequence[str] = (DEFAULT_FORMAT,),
    *,
    shard_rows: int = 100_000,
    batch_rows: int = 10_000,
    jsonl: bool = True,
    card: card_mod.CardOptions | None = None,
) -> ExportResult:
    """Write the run's answered records as a dataset (Parquet + JSONL + card) under ``output_dir``.

    Calls no API. Rerunning replaces the previous export atomically (it is written next to it first); an
    existing ``output_dir`` that is not a tracegen export is refused. ``shard_rows`` is the row count per
    Parquet file, ``batch_rows`` the rows held in memory per config (also the Parquet row-group size).
    """
    run = Path(run_dir)
    out = Path(output_dir) if output_dir is not None else RunPaths(run).dataset
    fmts = list(dict.fromkeys(formats)) or [DEFAULT_FORMAT]
    for f in fmts:
        _format(f)
    if shard_rows < 1 or batch_rows < 1:
        raise ConfigError("shard_rows and batch_rows must be at least 1")
    options = card or card_mod.CardOptions()
    options.check()
    _check_output_dir(out)
    summary = run_summary(run)  # validates the run's JSON files before any work
    source, records = read_records(run)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise RunDirError(
            f"cannot write the export to {out}: {e.strerror or e}; choose another --output "
            "(a directory you can write to)"
        ) from None
    writers: dict[tuple[str, str], _ShardWriter] = {}
    stage_dirs: dict[str, str] = {}
    tally, skipped = _Tally(), 0
    try:
        for r in records:
            if r.response is None:
                skipped += 1
                continue
            tally.add(r)
            if r.stage not in stage_dirs:
                stage_dirs[r.stage] = f"stage{len(stage_dirs)}"
            for f in fmts:
                w = writers.get((f, r.stage))
                if w is None:
                    root = tmp / f".{f}.{stage_dirs[r.stage]}"
                    w = writers[(f, r.stage)] = _ShardWriter(
                        root, FORMATS[f].features, shard_rows, batch_rows, jsonl
                    )
                w.add(FORMATS[f].row(r))
        if not writers:  # datasets cannot load a split with no rows: say so instead of writing one
            raise RunDirError(
                f"{run}: no answered records in {source} to export; run `tracegen run` (or check its filters)"
            )
        configs = _finish_configs(tmp, writers, fmts, list(stage_dirs))
        _write_public_run_files(run, tmp)
        manifest = _manifest(source, fmts, configs, tally, summary, options)
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
        (tmp / "README.md").write_text(card_mod.render_card(manifest), encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException as e:
        for w in writers.values():
            w.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise RunDirError(
                f"cannot write the export to {out}: {e.strerror or e}; free disk space or choose another --output"
            ) from e
        raise
    if skipped:
        logger.warning("%d records without a response were not exported", skipped)
    return ExportResult(out, source, tally.rows, tuple(configs), out / "README.md", skipped)


def _check_output_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_MANIFEST).exists())):
        raise RunDirError(f"{out} exists and is not a tracegen export; choose another --output or remove it")


def _finish_configs(
    tmp: Path, writers: Mapping[tuple[str, str], _ShardWriter], fmts: list[str], stages: list[str]
) -> list[ExportedConfig]:
    configs: list[ExportedConfig] = []
    names: set[str] = set()
    for f in fmts:
        for s in stages:
            w = writers.get((f, s))
            if w is None:
                continue
            name = f if len(stages) == 1 else f"{f}-{_config_dir_name(s)}"
            while name in names:
                name += "_"
            names.add(name)
            shards = w.close()
            final_root = tmp / name
            w.root.rename(final_root)
            configs.append(
                ExportedConfig(
                    name=name,
                    format=f,
                    stage=s,
                    rows=w.rows,
                    data_files=tuple(f"{name}/data/{p.name}" for p in shards),
                    jsonl_file=f"{name}/train.jsonl" if (final_root / "train.jsonl").exists() else None,
                    features=FORMATS[f].features.to_dict(),
                    num_bytes=w.nbytes,
                    download_size=sum((final_root / "data" / p.name).stat().st_size for p in shards),
                )
            )
    return configs


def _write_public_run_files(run: Path, tmp: Path) -> None:
    """Copy the run's manifest and stats JSON, secrets scrubbed, under ``tracegen/``."""
    files = {name: read_json_if_exists(run / name) for name in PUBLIC_RUN_FILES}
    found = card_mod.secret_values(list(files.values()))  # a key in one file is scrubbed from all of them
    dest = tmp / "tracegen"
    for name, data in files.items():
        if data is not None:
            dest.mkdir(exist_ok=True)
            clean = card_mod.scrub_secrets(data, extra_secrets=found)
            (dest / name).write_text(
                json.dumps(clean, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8"
            )


def _manifest(
    source: str,
    fmts: list[str],
    configs: list[ExportedConfig],
    tally: _Tally,
    summary: dict[str, Any],
    options: card_mod.CardOptions,
) -> dict[str, Any]:
    return {
        "export_format_version": 1,
        "tracegen_version": __version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "formats": fmts,
        "default_config": configs[0].name,
        "rows": tally.rows,
        "configs": [c.to_dict() for c in configs],
        "tally": tally.to_dict(),
        "run": summary,
        "card": options.to_dict(),
    }


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---- summaries ---------------------------------------------------------------------------------------------


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run summary for ``tracegen stats``: manifest config, stats.json, plan_stats.json, clean_stats.json.

    Sections that do not exist yet are left out; the export section appears once ``dataset/`` was written.
    Secrets are scrubbed (none should be there, this is a second fence).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory")
    manifest = read_json_if_exists(RunPaths(run).manifest)
    summary: dict[str, Any] = {"run_dir": run.name}
    if isinstance(manifest, dict):
        summary["tracegen_version"] = manifest.get("tracegen_version", manifest.get("version", ""))
        summary["created"] = manifest.get("created_at", manifest.get("created", ""))
        config = manifest.get("config")
        if isinstance(config, dict):
            summary["config"] = config
    for key, name in (
        ("stats", STATS),
        ("plan_stats", PLAN_STATS),
        ("clean_stats", CLEAN_STATS),
    ):
        data = read_json_if_exists(run / name)
        if data is not None:
            summary[key] = data
    exported = read_json_if_exists(RunPaths(run).dataset / EXPORT_MANIFEST)
    if isinstance(exported, dict) and isinstance(exported.get("configs"), list):
        summary["export"] = {
            str(c.get("name")): c.get("rows") for c in exported["configs"] if isinstance(c, dict)
        }
    result = card_mod.scrub_secrets(summary)
    assert isinstance(result, dict)
    return result


def find_export_dir(path: str | Path) -> Path:
    """The export dir for a run dir or an export dir (the one holding ``export.json``)."""
    p = Path(path)
    for candidate in (p, RunPaths(p).dataset):
        if (candidate / EXPORT_MANIFEST).is_file():
            return candidate
    raise RunDirError(f"{p}: no exported dataset found; run `tracegen export {p}` first")


def load_manifest(export_dir: str | Path) -> dict[str, Any]:
    """Read an export's ``export.json``."""
    path = Path(export_dir) / EXPORT_MANIFEST
    data = read_json_if_exists(path)
    if not isinstance(data, dict) or not isinstance(data.get("configs"), list):
        raise RunDirError(f"{path}: not a tracegen export manifest; run `tracegen export` again")
    return data


def iter_rows(export_dir: str | Path, config: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Rows of one exported config read back from its Parquet shards (tests, tooling)."""
    for rel in config["data_files"]:
        table = pq.read_table(Path(export_dir) / rel)
        yield from table.to_pylist()
