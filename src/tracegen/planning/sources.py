"""FLAN v2 prompt sources: local files, saved datasets and Hub datasets, streamed row by row.

A source spec (``--source``, ``RunConfig.source``) is one of

* a file: ``.jsonl``, ``.json`` (JSON lines or one JSON array), either optionally ``.gz``, or ``.parquet``;
* a directory: a ``datasets`` dataset saved with ``save_to_disk`` (read with ``load_from_disk``,
  memory-mapped), or else every supported file below it, recursively, in sorted path order;
* a glob (``data/*.parquet``), expanded in sorted order;
* a Hub dataset id (``owner/name``, optionally ``owner/name:split``; default split ``train``), streamed with
  ``datasets.load_dataset(..., streaming=True)``;
* the preset ``flan-v2`` (also what an empty source list means): the published ``*_submix_original``
  submixes ``conceptofmind/{cot,niv2,flan2021,t0}_submix_original`` (``data/train-*.parquet``); the
  Dialog submix is not read;
* the preset ``flan-v2-dpi``: the same submixes as copied by the Data Provenance Initiative
  (``DataProvenanceInitiative/{cot,niv2,flan2021,t0}_submix_original``, same layout and columns);
* the preset ``open-orca-flan``: the zero-shot folders of ``Open-Orca/FLAN`` that exist — ``cot_zsopt_data``,
  ``niv2_zsopt_data``, ``flan_zs{opt,noopt}_data``, ``t0_zs{opt,noopt}_data`` (the repository has 14
  folders, :data:`OPEN_ORCA_FLAN_LAYOUT`: CoT and NIv2 only in ``opt`` form, Dialog left out), each of
  ``part.N.parquet`` files with the seqio columns (``_task_source`` …), each streamed on its own.

A Hub folder or file that is missing is named in the error (with the folders the repository does have).

The planner reads each source once (:mod:`tracegen.planning.plan`); the per-task sizes it needs beforehand come from
:meth:`Source.iter_task_keys`, which reads only the metadata columns of Parquet data (local files or Hub
datasets, through ``datasets`` streaming with ``columns=``) and every row of other formats.

A spec that has a data-file extension is a path, never a Hub id. Nothing is loaded whole: JSON lines are read
in blocks of lines (64 KiB), JSON arrays are decoded incrementally, Parquet by record batches, saved datasets
in batches from the memory map, Hub datasets as a stream.

Columns are normalised (:func:`normalize_row`): ``inputs``/``targets``/``task_source``/``task_name``/
``template_type``; the seqio spelling with a leading underscore (``_task_source``, ``_task_name``,
``_template_type``); SirNeural/flan_v2's ``input``/``target``/``task``; and the ``source``/``target``
spelling of other FLAN dumps (``source`` is the prompt). ``task_source`` maps to the
submix: CoT→cot, NIv2→niv, Flan2021/FLAN→flan, P3/T0→t0; Dialog rows are skipped and counted.

Rule for rows without ``task_source`` (SirNeural/flan_v2): the ``task`` value is the submix name of the file
it was exported from (cot, niv2, flan, t0, dialog) and maps like ``task_source``; a per-task name is mapped by
its shape — ``task<digits>_…`` → niv, ``cot_…``/``stream_…`` → cot, a TFDS name with a version
(``glue/rte:2.0.0``) → flan — and anything else is a bad record. Without a ``task_name`` column the ``task``
value is the task name. Without ``template_type`` the file path must name it (``cot_zs_opt_train.jsonl.gz``,
``cot_zsopt_data/…``: ``zs_opt``, ``zsnoopt``, ``fs_opt``, ``fs_noopt`` spelled with or without ``_``).

Bad input (malformed JSON line, missing field, non-string value, empty question, unknown task_source or
template_type) raises :class:`~tracegen.errors.BadRecordError` naming ``file:line`` (1-based line) or
``file[row]`` / ``id[row]`` (0-based row) and the field. With ``skip_bad_records=True`` each one is passed to
``on_reject`` as a :class:`Rejection` (stage ``source``), counted, and reading goes on.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import BadRecordError, SourceError
from .file_readers import (
    _DATA_SUFFIXES,
    RawItem,
    _guarded,
    _jsonl_objects,
    _read_json,
    _read_jsonl,
    _read_parquet,
    _read_parquet_columns,
    _read_saved_dataset,
)
from .hub_source import _check_hub_files, _is_parquet_data, _probe_hub, _read_hub, _read_hub_columns
from .presets import (
    FLAN_V2_DPI_PRESET,
    FLAN_V2_PRESET,
    OPEN_ORCA_FLAN_FOLDERS,
    OPEN_ORCA_FLAN_LAYOUT,
    PRESETS,
)
from .source_rows import (
    META_COLUMNS as META_COLUMNS,
)
from .source_rows import (
    BadRecordReason,
    RejectCallback,
    Rejection,
    SourceRow,
    SourceStats,
    _Bad,
    _normalize,
    _task_key,
    normalize_row,
    submix_for_task_source,
)

__all__ = [
    "FLAN_V2_DPI_PRESET",
    "FLAN_V2_PRESET",
    "OPEN_ORCA_FLAN_FOLDERS",
    "OPEN_ORCA_FLAN_LAYOUT",
    "BadRecordReason",
    "RejectCallback",
    "Rejection",
    "Source",
    "SourceRow",
    "SourceStats",
    "normalize_row",
    "submix_for_task_source",
]

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
#: Longest source line (or .json array element) read, bytes: a FLAN prompt is a few KB; a longer line is
#: a bad record (one line, or rejected.jsonl with --skip-bad-records), never held whole.
MAX_LINE_BYTES = 16 * 1024 * 1024

#: rejected.jsonl gets at most this many Dialog rows (plan_stats.json counts them all).
DIALOG_REJECTIONS = 1000


# ---- spec resolution -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Part:
    kind: Literal["jsonl", "json", "parquet", "saved", "hub"]
    target: str
    """File or directory path, or Hub id."""
    label: str
    """How provenance names it."""
    split: str = "train"
    data_files: str | None = None
    """Hub only: a pattern of files in the repo (its folder name is the template-type hint)."""


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _file_part(path: Path, label: str) -> _Part | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _Part("jsonl", str(path), label)
    if name.endswith((".json", ".json.gz")):
        return _Part("json", str(path), label)
    if name.endswith(".parquet"):
        return _Part("parquet", str(path), label)
    return None


def _resolve(spec: str) -> list[_Part]:
    spec = spec.strip()
    if spec in PRESETS:
        return [_Part("hub", repo_id, repo_id) for repo_id in PRESETS[spec]]
    if spec == "open-orca-flan":
        return [
            _Part("hub", "Open-Orca/FLAN", f"Open-Orca/FLAN/{folder}", data_files=f"{folder}/*.parquet")
            for folder in OPEN_ORCA_FLAN_FOLDERS
        ]
    path = Path(spec).expanduser()
    if path.is_dir():
        if _is_saved_dataset(path):
            return [_Part("saved", str(path), spec)]
        parts: list[_Part] = []
        for found in sorted(p for p in path.rglob("*") if p.is_file()):
            part = _file_part(found, str(found))
            if part is not None:
                parts.append(part)
        if not parts:
            raise SourceError(
                f"source directory {spec!r} holds no {', '.join(_DATA_SUFFIXES)} files and is not a "
                "dataset saved with save_to_disk"
            )
        return parts
    if path.is_file():
        part = _file_part(path, spec)
        if part is None:
            raise SourceError(
                f"source file {spec!r} has an unsupported type; use {', '.join(_DATA_SUFFIXES)}, a directory "
                "or a Hub dataset id"
            )
        return [part]
    if glob.has_magic(spec):
        matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
        parts = []
        for match in matches:
            p = Path(match)
            if p.is_dir() and _is_saved_dataset(p):
                parts.append(_Part("saved", match, match))
            elif p.is_file() and (part := _file_part(p, match)) is not None:
                parts.append(part)
        if not parts:
            raise SourceError(f"source glob {spec!r} matches no data files ({', '.join(_DATA_SUFFIXES)})")
        return parts
    m = _HUB_ID.match(spec)
    if m and not spec.lower().endswith((*_DATA_SUFFIXES, ".gz", ".arrow", ".csv")):
        return [_Part("hub", m.group(1), m.group(1), split=m.group(2) or "train")]
    raise SourceError(
        f"source {spec!r} does not exist: pass an existing file, directory or glob, a Hub dataset id "
        "(owner/name), or a preset (flan-v2, flan-v2-dpi, open-orca-flan)"
    )


def _rejected_record(raw: dict[str, Any] | _Bad) -> dict[str, Any] | None:
    if isinstance(raw, dict):
        return raw
    return {"raw": raw.raw} if raw.raw is not None else None


@dataclass
class Source:
    """FLAN v2 prompt rows from one or more specs, streamed in order. Iterate with :meth:`iter_rows`.

    An empty ``specs`` means the ``flan-v2`` preset. Paths and globs are checked when the Source is made
    (SourceError naming the spec); Hub ids are probed by :meth:`check` or when first read.
    """

    specs: Sequence[str] = ()
    skip_bad_records: bool = False
    parts: list[_Part] = field(init=False)

    def __post_init__(self) -> None:
        specs = list(self.specs) or ["flan-v2"]
        self.parts = [part for spec in specs for part in _resolve(spec)]
        self._probed: dict[str, list[str]] = {}

    def _hub_files(self, part: _Part) -> list[str]:
        if part.target not in self._probed:
            self._probed[part.target] = _probe_hub(part.target)
        files = self._probed[part.target]
        _check_hub_files(part.target, files, part.data_files)
        return files

    def check(self) -> None:
        """Probe every Hub dataset now, so an unreachable one (or a missing folder) fails before reading."""
        for part in self.parts:
            if part.kind == "hub":
                self._hub_files(part)

    def _raw(self, part: _Part) -> Iterator[RawItem]:
        path = Path(part.target)
        if part.kind == "jsonl":
            return _guarded(_read_jsonl(path, part.label, MAX_LINE_BYTES), part.label)
        if part.kind == "json":
            return _guarded(_read_json(path, part.label, MAX_LINE_BYTES), part.label)
        if part.kind == "parquet":
            return _read_parquet(path, part.label)
        if part.kind == "saved":
            return _read_saved_dataset(path, part.label)
        self._hub_files(part)
        return _read_hub(part.target, part.label, part.split, part.data_files)

    def _meta_raw(self, part: _Part) -> Iterator[Mapping[str, Any]]:
        """The rows of one part with at least the metadata columns (only those for Parquet data)."""
        if part.kind == "parquet":
            yield from _read_parquet_columns(Path(part.target), part.label)
            return
        if part.kind == "hub" and _is_parquet_data(self._hub_files(part), part.data_files):
            yield from _read_hub_columns(part.target, part.label, part.split, part.data_files)
            return
        if part.kind == "jsonl":
            yield from _guarded(_jsonl_objects(Path(part.target), MAX_LINE_BYTES), part.label)
            return
        for _where, raw in self._raw(part):
            if isinstance(raw, dict):
                yield raw

    def column_read(self, part_index: int) -> bool:
        """Whether :meth:`iter_task_keys` reads only the metadata columns of part ``part_index``."""
        part = self.parts[part_index]
        if part.kind == "parquet":
            return True
        return part.kind == "hub" and _is_parquet_data(self._hub_files(part), part.data_files)

    def iter_task_keys(self) -> Iterator[tuple[str, str, str]]:
        """``(submix, task_name, template_type)`` of every row, read cheaply; Dialog and bad rows skipped.

        Parquet data (local files, Hub datasets) is read column-projected — only :data:`META_COLUMNS`;
        other formats are read whole. The planner uses these counts only to size its samples, so a row
        this read gets wrong costs at worst a second pass, never a wrong plan.
        """
        for part in self.parts:
            hint = part.target if part.kind != "hub" else (part.data_files or "")
            yield from filter(None, map(_task_key, self._meta_raw(part), itertools.repeat(hint)))

    def iter_rows(
        self, on_reject: RejectCallback | None = None, stats: SourceStats | None = None
    ) -> Generator[SourceRow, None, None]:
        """Every usable row in source order; Dialog rows skipped; bad rows raise or go to ``on_reject``."""
        stats = stats if stats is not None else SourceStats()
        for part in self.parts:
            hint = part.target if part.kind != "hub" else (part.data_files or "")
            for where, raw in self._raw(part):
                stats.rows_read += 1
                try:
                    if isinstance(raw, _Bad):
                        raise raw
                    row = _normalize(raw, where, hint)
                except _Bad as bad:
                    if not self.skip_bad_records:
                        raise BadRecordError(where, bad.field, bad.problem) from None
                    stats.bad_records += 1
                    if on_reject is not None:
                        on_reject(
                            Rejection(
                                id=where,
                                stage="source",
                                reason=bad.reason,
                                detail=f"field {bad.field!r} {bad.problem}",
                                record=_rejected_record(raw),
                            )
                        )
                    continue
                if row is None:
                    stats.dialog_skipped += 1
                    if on_reject is not None and stats.dialog_skipped <= DIALOG_REJECTIONS:
                        on_reject(
                            Rejection(
                                id=where,
                                stage="source",
                                reason="dialog",
                                detail="Dialog submix: not part of Orca's mix",
                                record=_rejected_record(raw),
                            )
                        )
                    continue
                yield row
