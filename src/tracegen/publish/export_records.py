"""Reading a run's answered records in plan order, for the export (memory bounded: two int64 arrays per record)."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from ..cleaning import handoff
from ..errors import RunDirError
from ..records import Record
from ..rundir import RunPaths, iter_records, open_read, read_jsonl_numbered

__all__ = ["read_record_dicts", "read_records"]

_RECORD_FIELDS = frozenset(f.name for f in fields(Record))


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


def read_record_dicts(run_dir: str | Path) -> tuple[str, Iterator[dict[str, Any]]]:
    """:func:`read_records` as dicts (``Record.to_dict()``: every field, the same values), without building a
    Record for a clean.jsonl line that already is one: every field present, no other key, its key filled."""
    source, records = read_records(run_dir)
    clean = RunPaths(Path(run_dir)).clean
    if source != clean.name:
        return source, (r.to_dict() for r in records)
    kept: list[tuple[Any, ...]] | None = handoff.noted("kept", clean)
    if kept is not None:  # this process's clean wrote the file from these records (exact: see handoff)
        return source, map(handoff.record_dict, kept)
    return source, _complete_dicts(clean)


def _complete_dicts(path: Path) -> Iterator[dict[str, Any]]:
    what = "fix or remove the line"
    for lineno, data in read_jsonl_numbered(path, what=what, kind="Record line"):
        if isinstance(data, dict) and data.keys() == _RECORD_FIELDS and data["key"]:
            yield data  # what Record.from_dict(data).to_dict() gives, in another key order (rows pick by name)
            continue
        try:  # a short, foreign or hand-written line: the Record type fills, checks and drops as usual
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            yield Record.from_dict(data).to_dict()
        except (ValueError, TypeError) as e:
            raise RunDirError(f"{path}:{lineno}: not a Record line ({e}); {what}") from None
