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
line by line, JSON arrays are decoded incrementally, Parquet by record batches, saved datasets in batches
from the memory map, Hub datasets as a stream.

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

import fnmatch
import glob
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import BadRecordError, SourceError

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

#: The published FLAN v2 collection, one Hub dataset per submix (Dialog is not used by Orca).
FLAN_V2_PRESET: tuple[str, ...] = (
    "conceptofmind/cot_submix_original",
    "conceptofmind/niv2_submix_original",
    "conceptofmind/flan2021_submix_original",
    "conceptofmind/t0_submix_original",
)
#: The Data Provenance Initiative's copies of the same submixes (same files and columns).
FLAN_V2_DPI_PRESET: tuple[str, ...] = tuple(
    "DataProvenanceInitiative/" + repo_id.split("/", 1)[1] for repo_id in FLAN_V2_PRESET
)
#: Open-Orca/FLAN (the whole collection as parquet): its 14 folders, each of ``part.N.parquet`` files.
OPEN_ORCA_FLAN_LAYOUT: tuple[str, ...] = (
    "cot_zsopt_data",
    "cot_fsopt_data",
    "niv2_zsopt_data",
    "niv2_fsopt_data",
    "flan_zsopt_data",
    "flan_fsopt_data",
    "flan_zsnoopt_data",
    "flan_fsnoopt_data",
    "t0_zsopt_data",
    "t0_fsopt_data",
    "t0_zsnoopt_data",
    "t0_fsnoopt_data",
    "dialog_zsopt_data",
    "dialog_fsopt_data",
)
#: What the ``open-orca-flan`` preset reads: the zero-shot folders, Dialog left out.
OPEN_ORCA_FLAN_FOLDERS: tuple[str, ...] = tuple(
    f for f in OPEN_ORCA_FLAN_LAYOUT if "_zs" in f and not f.startswith("dialog")
)
PRESETS: dict[str, tuple[str, ...]] = {"flan-v2": FLAN_V2_PRESET, "flan-v2-dpi": FLAN_V2_DPI_PRESET}
#: Columns that say which task a row belongs to (what :meth:`Source.iter_task_keys` reads).
META_COLUMNS: tuple[str, ...] = (
    "task_source",
    "_task_source",
    "task_name",
    "_task_name",
    "template_type",
    "_template_type",
    "task",
)

_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_HUB_ID = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
_PROBE_TIMEOUT_S = 10.0
_COLUMN_READ_BLOCK = 64 * 1024
_BATCH_ROWS = 1024
_CHUNK_CHARS = 1 << 16
_decode_json = json.JSONDecoder().decode
#: Longest source line (or .json array element) read, bytes: a FLAN prompt is a few KB; a longer line is
#: a bad record (one line, or rejected.jsonl with --skip-bad-records), never held whole.
MAX_LINE_BYTES = 16 * 1024 * 1024

_TASK_SOURCE_TO_SUBMIX = {
    "cot": "cot",
    "niv2": "niv",
    "niv": "niv",
    "flan2021": "flan",
    "flan": "flan",
    "p3": "t0",
    "t0": "t0",
    "dialog": "dialog",
}
_TEMPLATE_TYPES = {"zsopt": "zs_opt", "zsnoopt": "zs_noopt", "fsopt": "fs_opt", "fsnoopt": "fs_noopt"}
_TEMPLATE_IN_PATH = re.compile(r"(?<![a-z])(zs|fs)_?(opt|noopt)(?![a-z])")

BadRecordReason = Literal[
    "malformed_json", "missing_field", "not_a_string", "empty_question", "unknown_value", "line_too_long"
]


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One FLAN v2 prompt row, normalised."""

    question: str
    """FLAN ``inputs``: the user message."""
    target: str
    """FLAN ``targets``: the reference answer."""
    submix: str
    """cot | niv | flan | t0 (Dialog rows never become SourceRows)."""
    task_name: str
    template_type: str
    """zs_opt | zs_noopt | fs_opt | fs_noopt."""
    where: str
    """Provenance: ``file:line`` (1-based), ``file[row]`` or ``hub_id[row]`` (0-based)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One line of ``rejected.jsonl``: a row some stage refused, and why."""

    id: str
    """The Record id, or for stage ``source`` the row's provenance (``file:line``)."""
    stage: str
    reason: str
    detail: str
    record: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "record": self.record,
        }


RejectCallback = Callable[[Rejection], None]

#: rejected.jsonl gets at most this many Dialog rows (plan_stats.json counts them all).
DIALOG_REJECTIONS = 1000


@dataclass(slots=True)
class SourceStats:
    """What one pass over the sources saw."""

    rows_read: int = 0
    """Every row or line holding data, good or bad."""
    bad_records: int = 0
    dialog_skipped: int = 0


class _Bad(Exception):
    """Internal: a malformed row (becomes BadRecordError or a Rejection)."""

    def __init__(self, reason: BadRecordReason, field: str, problem: str, raw: str | None = None) -> None:
        super().__init__(problem)
        self.reason: BadRecordReason = reason
        self.field = field
        self.problem = problem
        self.raw = raw


# ---- normalisation ---------------------------------------------------------------------------------------
def submix_for_task_source(task_source: str) -> str | None:
    """cot | niv | flan | t0 | dialog for a FLAN ``task_source`` value (case-insensitive), else None."""
    return _TASK_SOURCE_TO_SUBMIX.get(task_source.strip().lower())


def _submix_for_task(task: str) -> str | None:
    known = submix_for_task_source(task)
    if known is not None:
        return known
    name = task.strip()
    if re.match(r"^task\d+_", name):
        return "niv"
    if name.startswith(("cot_", "stream_")):
        return "cot"
    if re.search(r":\d+\.\d+\.\d+$", name):
        return "flan"
    return None


def _pick(raw: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
    for name in names:
        if name in raw and raw[name] is not None:
            return name, raw[name]
    return None


def _text(raw: Mapping[str, Any], names: Sequence[str], *, required: bool = True) -> str | None:
    found = _pick(raw, names)
    if found is None:
        if required:
            raise _Bad("missing_field", names[0], f"is missing (looked for {', '.join(names)})")
        return None
    name, value = found
    if not isinstance(value, str):
        raise _Bad("not_a_string", name, f"must be a string, got {type(value).__name__}")
    return value


def _template_from_path(path_hint: str) -> str | None:
    m = _TEMPLATE_IN_PATH.search(path_hint.lower())
    return f"{m.group(1)}_{m.group(2)}" if m else None


_FAST_SOURCE = {"CoT": "cot", "NIv2": "niv", "Flan2021": "flan", "P3": "t0", "T0": "t0", "Dialog": "dialog"}
_CANONICAL_TEMPLATES = frozenset(_TEMPLATE_TYPES.values())


def _normalize(raw: Mapping[str, Any], where: str, path_hint: str) -> SourceRow | None:
    """A SourceRow, or None for a Dialog row. Raises _Bad."""
    # fast path: the published spellings, all fields present and well formed (same result as below)
    get = raw.get
    source = get("task_source") or get("_task_source")
    submix = _FAST_SOURCE.get(source) if type(source) is str else None
    if submix == "dialog":
        return None
    if submix is not None:
        question, target = get("inputs"), get("targets")
        task_name = get("task_name") or get("_task_name")
        template = get("template_type") or get("_template_type")
        if (
            type(question) is str
            and type(target) is str
            and type(task_name) is str
            and template in _CANONICAL_TEMPLATES
            and question.strip()
        ):
            return SourceRow(question, target, submix, task_name, template, where)
    return _normalize_slow(raw, where, path_hint)


def _normalize_slow(raw: Mapping[str, Any], where: str, path_hint: str) -> SourceRow | None:
    task_source = _text(raw, ("task_source", "_task_source"), required=False)
    task = _text(raw, ("task",), required=False)
    if task_source is not None:
        submix = submix_for_task_source(task_source)
        if submix is None:
            raise _Bad(
                "unknown_value",
                "task_source",
                f"has unknown value {task_source[:60]!r} (expected CoT, NIv2, Flan2021, P3/T0 or Dialog)",
            )
    elif task is not None:
        submix = _submix_for_task(task)
        if submix is None:
            raise _Bad(
                "unknown_value",
                "task",
                f"value {task[:60]!r} names no FLAN submix (expected cot, niv2, flan, t0, dialog or a "
                "task name like task123_..., cot_..., name:1.0.0); add a task_source column",
            )
    else:
        raise _Bad("missing_field", "task_source", "is missing (looked for task_source, _task_source, task)")
    if submix == "dialog":
        return None
    question = _text(raw, ("inputs", "input", "source"))
    assert question is not None
    if not question.strip():
        raise _Bad("empty_question", "inputs", "is empty")
    target = _text(raw, ("targets", "target"))
    assert target is not None
    task_name = _text(raw, ("task_name", "_task_name"), required=False)
    if task_name is None:
        if task is None:
            raise _Bad("missing_field", "task_name", "is missing (looked for task_name, _task_name, task)")
        task_name = task
    template_raw = _text(raw, ("template_type", "_template_type"), required=False)
    if template_raw is None:
        template = _template_from_path(path_hint)
        if template is None:
            raise _Bad(
                "missing_field",
                "template_type",
                "is missing (looked for template_type, _template_type, and a zs_opt/zs_noopt/fs_opt/"
                "fs_noopt hint in the file name)",
            )
    else:
        template = _TEMPLATE_TYPES.get(re.sub(r"[^a-z]", "", template_raw.lower()), "")
        if not template:
            raise _Bad(
                "unknown_value",
                "template_type",
                f"has unknown value {template_raw[:40]!r} (expected zs_opt, zs_noopt, fs_opt or fs_noopt)",
            )
    return SourceRow(
        question=question,
        target=target,
        submix=submix,
        task_name=task_name,
        template_type=template,
        where=where,
    )


def normalize_row(raw: Mapping[str, Any], where: str, path_hint: str = "") -> SourceRow | None:
    """Normalise one raw row; None for a Dialog row; BadRecordError (naming ``where`` and field) if bad."""
    try:
        return _normalize(raw, where, path_hint)
    except _Bad as e:
        raise BadRecordError(where, e.field, e.problem) from None


# ---- readers: each yields (where, raw dict or _Bad) ------------------------------------------------------
RawItem = tuple[str, "dict[str, Any] | _Bad"]


def _open_text(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _as_object(value: Any) -> dict[str, Any] | _Bad:
    if isinstance(value, dict):
        return value
    return _Bad("malformed_json", "line", f"is a JSON {type(value).__name__}, not an object")


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line, size) of every line; the line is None when longer than MAX_LINE_BYTES (the rest
    of it is skipped in chunks, never held)."""
    lineno = 0
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        lineno += 1
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield lineno, line, len(line)
            continue
        size = len(line)
        while True:
            rest = f.readline(1 << 20)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield lineno, None, size


def _read_jsonl(path: Path, label: str) -> Iterator[RawItem]:
    with _open_text(path) as f:
        for lineno, line, size in _lines(f):
            where = f"{label}:{lineno}"
            if line is None:
                yield (
                    where,
                    _Bad("line_too_long", "line", f"is {size:,} bytes, over the {MAX_LINE_BYTES:,} limit"),
                )
                continue
            if not line.strip():
                continue
            try:
                value = _decode_json(line.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                text = line[:8000].decode("utf-8", errors="replace").rstrip("\r\n")
                yield where, _Bad("malformed_json", "line", f"is not valid JSON ({_short(e)})", text[:2000])
                continue
            except RecursionError:
                yield where, _Bad("malformed_json", "line", "is not valid JSON (nested too deeply)")
                continue
            yield where, _as_object(value)


def _guarded(items: Iterator[RawItem], label: str) -> Iterator[RawItem]:
    """``items``, with an unreadable file (bad gzip, invalid UTF-8 in a .json array, I/O error) as one
    SourceError line instead of a traceback."""
    import zlib

    try:
        yield from items
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise SourceError(
            f"{label}: not a readable gzip file ({_short(e)}); re-download or recompress it"
        ) from None
    except UnicodeDecodeError as e:
        raise SourceError(
            f"{label}: not UTF-8 text (byte {e.start} of a read block); save it as UTF-8"
        ) from None
    except OSError as e:
        raise SourceError(f"{label}: cannot read ({e.strerror or _short(e)})") from None


def _short(e: Exception) -> str:
    return str(e).split("\n", 1)[0][:120]


def _read_json_array(path: Path, label: str) -> Iterator[RawItem]:
    """Decode a top-level JSON array one element at a time (memory: one element plus a read buffer)."""
    decoder = json.JSONDecoder()
    with _open_text(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8")
        buf, pos, eof = f.read(_CHUNK_CHARS), 0, False

        def refill() -> None:
            nonlocal buf, pos, eof
            chunk = f.read(_CHUNK_CHARS)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0

        def next_char() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if eof:
                    return ""
                refill()

        if next_char() != "[":
            raise SourceError(f"{label}: a .json source must be JSON lines or one JSON array of objects")
        pos += 1
        index = 0
        while True:
            c = next_char()
            if c == "]" and index == 0:
                return
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except RecursionError:
                    yield (
                        f"{label}[{index}]",
                        _Bad("malformed_json", "line", "is not valid JSON (nested too deeply)"),
                    )
                    return
                except json.JSONDecodeError as e:
                    if len(buf) - pos > MAX_LINE_BYTES:
                        yield (
                            f"{label}[{index}]",
                            _Bad(
                                "line_too_long",
                                "line",
                                f"is over the {MAX_LINE_BYTES:,}-byte limit of one element",
                            ),
                        )
                        return
                    if eof:
                        where = f"{label}[{index}]"
                        yield where, _Bad("malformed_json", "line", f"is not valid JSON ({_short(e)})")
                        return
                    refill()
            yield f"{label}[{index}]", _as_object(value)
            index += 1
            pos = end
            c = next_char()
            if c == "]":
                return
            if c != ",":
                where = f"{label}[{index}]"
                yield where, _Bad("malformed_json", "line", "is not valid JSON (expected ',' or ']')")
                return
            pos += 1


def _read_json(path: Path, label: str) -> Iterator[RawItem]:
    with _open_text(path) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        yield from _read_json_array(path, label)
    else:
        yield from _read_jsonl(path, label)


def _read_parquet(path: Path, label: str) -> Iterator[RawItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise SourceError(f"{label}: not a readable Parquet file ({_short(e)})") from None
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        for raw in batch.to_pylist():
            yield f"{label}[{row}]", raw
            row += 1


def _read_saved_dataset(path: Path, label: str) -> Iterator[RawItem]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError/ValueError for a broken directory
        raise SourceError(f"{label}: cannot load the saved dataset ({_short(e)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = ["train"] if "train" in loaded else sorted(loaded)
        parts = [(loaded[s], f"{label}/{s}") for s in splits]
    else:
        parts = [(loaded, label)]
    for ds, part_label in parts:
        row = 0
        for batch in ds.iter(batch_size=_BATCH_ROWS):
            columns = list(batch)
            size = len(batch[columns[0]]) if columns else 0
            for i in range(size):
                yield f"{part_label}[{row}]", {c: batch[c][i] for c in columns}
                row += 1


def _hub_unreachable(repo_id: str, why: str) -> SourceError:
    return SourceError(
        f"Hub dataset {repo_id!r} could not be reached ({why}): check the id, set HF_TOKEN for a gated or "
        "private dataset, unset HF_HUB_OFFLINE, or pass a local --source (files or a save_to_disk directory)"
    )


def _probe_hub(repo_id: str) -> list[str]:
    """The dataset's file paths; fails in seconds, without retries, when it cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        info = HfApi().dataset_info(repo_id, timeout=_PROBE_TIMEOUT_S)
    except OfflineModeIsEnabled:
        raise _hub_unreachable(repo_id, "HF_HUB_OFFLINE is set") from None
    except GatedRepoError:
        raise _hub_unreachable(repo_id, "gated dataset, access not granted") from None
    except RepositoryNotFoundError:
        raise _hub_unreachable(repo_id, "not found, or private") from None
    except Exception as e:  # network errors come from httpx/requests/OSError alike
        raise _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}") from None
    return [sibling.rfilename for sibling in info.siblings or []]


def _check_hub_files(repo_id: str, files: Sequence[str], data_files: str | None) -> None:
    """A SourceError naming the folder or file ``data_files`` asks for when the repository lacks it."""
    if data_files is None or any(fnmatch.fnmatch(f, data_files) for f in files):
        return
    folder = data_files.split("/", 1)[0] if "/" in data_files else ""
    folders = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    missing = f"folder {folder!r}" if folder and folder not in folders else f"files {data_files!r}"
    raise SourceError(
        f"Hub dataset {repo_id!r} has no {missing} (it has: {', '.join(folders) or 'no folders'}); "
        "check the preset's layout against the repository, or pass a local --source"
    )


def _is_parquet_data(files: Sequence[str], data_files: str | None) -> bool:
    """Whether the part's data files are all Parquet (so its metadata columns can be read alone)."""
    data = [
        f
        for f in files
        if (data_files is None or fnmatch.fnmatch(f, data_files))
        and f.lower().endswith((*_DATA_SUFFIXES, ".gz", ".csv", ".arrow", ".txt"))
    ]
    return bool(data) and all(f.lower().endswith(".parquet") for f in data)


def _read_hub(repo_id: str, label: str, split: str, data_files: str | None) -> Iterator[RawItem]:
    import datasets

    try:
        if data_files is None:
            ds = datasets.load_dataset(repo_id, split=split, streaming=True)
        else:
            ds = datasets.load_dataset(repo_id, data_files=data_files, split=split, streaming=True)
        iterator = iter(ds)
    except Exception as e:  # datasets raises many types here; all mean "cannot read"
        raise _hub_read_error(repo_id, data_files, e) from None
    row = 0
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except Exception as e:  # a network failure in the middle of the stream
            raise SourceError(
                f"Hub dataset {repo_id!r}: reading stopped at row {row} ({type(e).__name__}: {_short(e)}); "
                "rerun, or download it and pass a local --source"
            ) from None
        yield f"{label}[{row}]", dict(raw)
        row += 1


def _task_key(raw: Mapping[str, Any], path_hint: str) -> tuple[str, str, str] | None:
    """(submix, task_name, template_type) from the metadata columns, or None (Dialog, malformed)."""
    source = raw.get("task_source") or raw.get("_task_source")
    task = raw.get("task")
    if isinstance(source, str):
        submix = submix_for_task_source(source)
    elif isinstance(task, str):
        submix = _submix_for_task(task)
    else:
        return None
    name = raw.get("task_name") or raw.get("_task_name") or task
    if submix is None or submix == "dialog" or not isinstance(name, str):
        return None
    template_raw = raw.get("template_type") or raw.get("_template_type")
    if isinstance(template_raw, str):
        template = _TEMPLATE_TYPES.get(re.sub(r"[^a-z]", "", template_raw.lower()))
    else:
        template = _template_from_path(path_hint)
    return (submix, name, template) if template else None


def _read_parquet_columns(path: Path, label: str) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a broken file
        raise SourceError(f"{label}: not a readable Parquet file ({_short(e)})") from None
    columns = [c for c in META_COLUMNS if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS * 16, columns=columns):
        lists = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            yield {c: values[i] for c, values in lists.items()}


def _read_hub_columns(
    repo_id: str, label: str, split: str, data_files: str | None
) -> Iterator[dict[str, Any]]:
    """Stream only the metadata columns of a Parquet Hub dataset (``datasets`` reads just those chunks)."""
    import datasets

    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if data_files is not None:
        kwargs["data_files"] = data_files
    try:
        features = datasets.load_dataset(repo_id, **kwargs).features
        names = list(features) if features is not None else []
        columns = [c for c in META_COLUMNS if c in names]
        if not columns:  # nothing to size tasks by: every row of this part becomes a planning candidate
            return
        # small read blocks: the metadata column chunks are a few KB each, and the default read-ahead
        # block would fetch most of the file around them
        storage = {"hf": {"block_size": _COLUMN_READ_BLOCK}}
        iterator = iter(datasets.load_dataset(repo_id, columns=columns, storage_options=storage, **kwargs))
    except Exception as e:  # datasets raises many types here; all mean "cannot read"
        raise _hub_read_error(repo_id, data_files, e) from None
    row = 0
    while True:
        try:
            raw = next(iterator)
        except StopIteration:
            return
        except Exception as e:  # a network failure in the middle of the stream
            raise SourceError(
                f"Hub dataset {label!r}: reading task names stopped at row {row} "
                f"({type(e).__name__}: {_short(e)}); rerun, or download it and pass a local --source"
            ) from None
        yield dict(raw)
        row += 1


def _hub_read_error(repo_id: str, data_files: str | None, e: Exception) -> SourceError:
    if isinstance(e, FileNotFoundError) or type(e).__name__ in (
        "DataFilesNotFoundError",
        "EmptyDatasetError",
    ):
        what = f"no files matching {data_files!r}" if data_files else "no data files"
        return SourceError(f"Hub dataset {repo_id!r} has {what} ({_short(e)}); check the folder name")
    return _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}")


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
            return _guarded(_read_jsonl(path, part.label), part.label)
        if part.kind == "json":
            return _guarded(_read_json(path, part.label), part.label)
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
            for raw in self._meta_raw(part):
                key = _task_key(raw, hint)
                if key is not None:
                    yield key

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
