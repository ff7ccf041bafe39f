"""What clean has in memory, handed to the export and the report of the same process instead of a re-read.

A run cleans, exports and writes its report one after the other: clean reads every traces.jsonl line and
holds every kept record, which the export would read back from clean.jsonl and the report from traces.jsonl.
Clean notes them here, each keyed by its file's identity (device, inode, size, modification time) as clean
left it; a reader takes a note only while the file is still that file, else it reads the file as before
(``tracegen export DIR`` and ``tracegen report DIR`` alone always do). Bounded: a run larger than
:data:`MAX_ROWS` notes nothing. Nothing is kept across processes.

Notes are exact: clean notes only what it read with the same parser (orjson) as the readers, and kept
records whose clean.jsonl line orjson wrote, so a reader gets the values a re-read would give.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from ..records import Record

__all__ = [
    "MAX_ROWS",
    "Identity",
    "Rejected",
    "file_identity",
    "forget",
    "note",
    "noted",
    "record_dict",
    "record_values",
    "rejected_fields",
    "trace_fields",
]

Identity = tuple[int, int, int, int]

#: Rows (kept records, trace lines) held at most; a larger run is re-read (bounded memory).
MAX_ROWS = 100_000

_notes: dict[str, tuple[Identity, Any]] = {}

Rejected = tuple[str, str, str, str, Any]
"""What the report counts of a rejected.jsonl line: stage, reason, the record's eval_set and submix (as
``str``), its ``agrees_with_target`` (as read)."""


_FIELDS = tuple(f.name for f in fields(Record))
record_values = attrgetter(*_FIELDS)
"""A record's field values as a tuple, in declaration order. Kept as tuples, not records or dicts: a tuple of
plain values leaves the garbage collector's lists at its first young collection, while thousands of records
or dicts held through the export would make the collector run a full collection of the whole heap."""


def record_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    """``Record.to_dict()`` of the record whose :data:`record_values` these are."""
    return dict(zip(_FIELDS, values, strict=True))


def rejected_fields(line: Mapping[str, Any]) -> Rejected:
    """The :data:`Rejected` fields of a rejected.jsonl line (a JSON object)."""
    raw = line.get("record")
    rec: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    return (
        str(line.get("stage", "")),
        str(line.get("reason", "")),
        str(rec.get("eval_set", "")),
        str(rec.get("submix", "")),
        rec.get("agrees_with_target"),
    )


def trace_fields(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the report takes from a trace (its few fields, so the record's long texts are freed at once).

    A tuple of plain values (an empty ``retried`` list, on almost every trace, as None), for the reason given
    at :data:`record_values`."""
    return (
        rec.get("cost_usd"),
        rec.get("answered_at"),
        rec.get("latency_s"),
        rec.get("retried") or None,  # the report reads only a non-empty one; see record_values for why None
        rec.get("submix", ""),
        rec.get("system_message_id"),
        rec.get("system_prompt"),
        rec.get("completion_tokens"),
        rec.get("model"),
    )


def file_identity(path: Path) -> Identity | None:
    """(device, inode, size, mtime_ns) of ``path``; None when it cannot be read."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def note(kind: str, path: Path, value: Any) -> None:
    """Keep ``value`` (what a reader of ``path`` would compute) as the one note of ``kind``."""
    identity = file_identity(path)
    if identity is None:
        _notes.pop(kind, None)
    else:
        _notes[kind] = (identity, value)


def noted(kind: str, path: Path) -> Any:
    """The note of ``kind`` if it was taken from ``path`` as the file is now, else None. Taken once: the
    note is dropped (its memory freed) as it is handed over."""
    entry = _notes.get(kind)
    if entry is None or file_identity(path) != entry[0]:
        return None
    del _notes[kind]
    return entry[1]


def forget(kind: str) -> None:
    """Drop the note of ``kind`` (a file about to be rewritten)."""
    _notes.pop(kind, None)
