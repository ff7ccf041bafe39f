"""FLAN v2 prompt sources: local files, saved datasets and Hub datasets, streamed row by row.

A source spec (``--source``, ``RunConfig.source``) is one of

* a file: ``.jsonl``, ``.json`` (JSON lines or one JSON array), either optionally ``.gz``, or ``.parquet``;
* a directory: a ``datasets`` dataset saved with ``save_to_disk`` (read with ``load_from_disk``,
  memory-mapped), or else every supported file below it, recursively, in sorted path order;
* a glob (``data/*.parquet``), expanded in sorted order;
* a Hub dataset id (``owner/name``, optionally ``owner/name:split``; default split ``train``), streamed with
  ``datasets.load_dataset(..., streaming=True)``;
* the preset ``flan-v2`` (also what an empty source list means): the published ``*_submix_original``
  submixes ``conceptofmind/{cot,niv2,flan2021,t0}_submix_original``; the Dialog submix is not read;
* the preset ``open-orca-flan``: the zero-shot folders of ``Open-Orca/FLAN`` (``cot_zsopt_data``, …,
  ``t0_zsnoopt_data``), each streamed on its own so its folder name gives the template type.

Hub sources are streamed twice by the planner (two passes); for big runs a local copy is faster.

A spec that has a data-file extension is a path, never a Hub id. Nothing is loaded whole: JSON lines are read
line by line, JSON arrays are decoded incrementally, Parquet by record batches, saved datasets in batches
from the memory map, Hub datasets as a stream.

Columns are normalised (:func:`normalize_row`): ``inputs``/``targets``/``task_source``/``task_name``/
``template_type``; the seqio spelling with a leading underscore (``_task_source``, ``_task_name``,
``_template_type``); and SirNeural/flan_v2's ``input``/``target``/``task``. ``task_source`` maps to the
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

from .errors import BadRecordError, SourceError

__all__ = [
    "FLAN_V2_PRESET",
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
#: Open-Orca/FLAN (the whole collection as parquet): only its zero-shot folders, Dialog left out.
OPEN_ORCA_FLAN_FOLDERS: tuple[str, ...] = tuple(
    f"{submix}_{template}_data"
    for submix in ("cot", "niv2", "flan", "t0")
    for template in ("zsopt", "zsnoopt")
)
PRESETS: dict[str, tuple[str, ...]] = {"flan-v2": FLAN_V2_PRESET}

_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_HUB_ID = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
_PROBE_TIMEOUT_S = 10.0
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
    question = _text(raw, ("inputs", "input"))
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


def _probe_hub(repo_id: str) -> None:
    """Fail in seconds, without retries, when the Hub or the dataset cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        HfApi().dataset_info(repo_id, timeout=_PROBE_TIMEOUT_S)
    except OfflineModeIsEnabled:
        raise _hub_unreachable(repo_id, "HF_HUB_OFFLINE is set") from None
    except GatedRepoError:
        raise _hub_unreachable(repo_id, "gated dataset, access not granted") from None
    except RepositoryNotFoundError:
        raise _hub_unreachable(repo_id, "not found, or private") from None
    except Exception as e:  # network errors come from httpx/requests/OSError alike
        raise _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}") from None


def _read_hub(repo_id: str, label: str, split: str, data_files: str | None) -> Iterator[RawItem]:
    import datasets

    try:
        if data_files is None:
            ds = datasets.load_dataset(repo_id, split=split, streaming=True)
        else:
            ds = datasets.load_dataset(repo_id, data_files=data_files, split=split, streaming=True)
        iterator = iter(ds)
    except Exception as e:  # datasets raises many types here; all mean "cannot read"
        raise _hub_unreachable(repo_id, f"{type(e).__name__}: {_short(e)}") from None
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
        "(owner/name), or the preset flan-v2"
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
        self._probed: set[str] = set()

    def check(self) -> None:
        """Probe every Hub dataset now, so an unreachable one fails before any reading starts."""
        for part in self.parts:
            if part.kind == "hub" and part.target not in self._probed:
                _probe_hub(part.target)
                self._probed.add(part.target)

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
        if part.target not in self._probed:
            _probe_hub(part.target)
            self._probed.add(part.target)
        return _read_hub(part.target, part.label, part.split, part.data_files)

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
