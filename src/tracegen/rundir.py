"""The run directory's one owner: the names of its files, how they are read and written, and its lock.

A run directory is the interface between the steps (plan → run → clean → export → push); every module asks
this one for a file's path instead of spelling its name::

    <run dir>/
      .tracegen.lock      one process at a time (:func:`lock_run_dir`)
      manifest.json       plan parameters and teacher settings (:func:`read_manifest`, :func:`write_manifest`)
      plan.jsonl          the planned records;  plan_stats.json  their mix;  requests.jsonl  the request bodies
      traces.jsonl        answered records;  failed.jsonl  retried on rerun;  rejected.jsonl  dropped, by stage
      ledger.jsonl        every dollar reserved and settled;  stats.json  the run's counters
      batches.jsonl       the Batch API journal;  batches/  its part files
      clean.jsonl         kept after cleaning;  clean_stats.json  its counts;  dedup_state.npz  near-dup state
      report.html         the run report;  dataset/  the export;  stages/<name>/  one run directory per stage

Writers are durable: :func:`atomic_write_bytes` / :func:`write_json` / :func:`write_jsonl` and
:class:`AtomicFile` write a temp file, fsync, rename and fsync the directory; :func:`open_append` gives an
``O_APPEND`` descriptor for fsynced appends. Every file is opened without following a symlink: a
``traces.jsonl`` that is a symlink is refused with :class:`~tracegen.errors.RunDirError`.

Readers: :func:`read_jsonl` reads JSON lines with ``jsonlines`` over orjson, and a line that is not JSON
becomes one :class:`~tracegen.errors.RunDirError` naming ``file:line``. The engine's hot paths (the
group-commit writer, the done-set scan by byte prefix) keep their own byte-level code in
:mod:`tracegen.engine.store`, built on the names and openers here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import jsonlines
import orjson

from ._fileio import (
    atomic_write_bytes,
    fsync_dir,
    open_append,
    open_nofollow,
    open_read,
    truncate_durably,
    write_files_atomically,
)
from .errors import RunDirError
from .lock import LOCK_NAME, lock_run_dir
from .records import Record

__all__ = [
    "BATCHES",
    "BATCH_PARTS",
    "CLEAN",
    "CLEAN_STATS",
    "DATASET",
    "DEDUP_STATE",
    "FAILED",
    "LEDGER",
    "LOCK_NAME",
    "MANIFEST",
    "PLAN",
    "PLAN_STATS",
    "REJECTED",
    "REPORT",
    "REQUESTS",
    "STAGES",
    "STATS",
    "TRACES",
    "AtomicFile",
    "RunPaths",
    "atomic_write_bytes",
    "fsync_dir",
    "iter_records",
    "json_line",
    "lock_run_dir",
    "open_append",
    "open_nofollow",
    "open_read",
    "read_json",
    "read_json_if_exists",
    "read_jsonl",
    "read_jsonl_numbered",
    "read_manifest",
    "read_plan",
    "truncate_durably",
    "write_files_atomically",
    "write_json",
    "write_jsonl",
    "write_manifest",
]

PLAN = "plan.jsonl"
PLAN_STATS = "plan_stats.json"
REQUESTS = "requests.jsonl"
MANIFEST = "manifest.json"
TRACES = "traces.jsonl"
FAILED = "failed.jsonl"
REJECTED = "rejected.jsonl"
LEDGER = "ledger.jsonl"
STATS = "stats.json"
BATCHES = "batches.jsonl"
BATCH_PARTS = "batches"
CLEAN = "clean.jsonl"
CLEAN_STATS = "clean_stats.json"
DEDUP_STATE = "dedup_state.npz"
REPORT = "report.html"
DATASET = "dataset"
STAGES = "stages"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The named paths of run directory ``root`` (nothing is created or read)."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / PLAN

    @property
    def plan_stats(self) -> Path:
        return self.root / PLAN_STATS

    @property
    def requests(self) -> Path:
        return self.root / REQUESTS

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def traces(self) -> Path:
        return self.root / TRACES

    @property
    def failed(self) -> Path:
        return self.root / FAILED

    @property
    def rejected(self) -> Path:
        return self.root / REJECTED

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER

    @property
    def stats(self) -> Path:
        return self.root / STATS

    @property
    def batches(self) -> Path:
        return self.root / BATCHES

    @property
    def batch_parts(self) -> Path:
        return self.root / BATCH_PARTS

    @property
    def clean(self) -> Path:
        return self.root / CLEAN

    @property
    def clean_stats(self) -> Path:
        return self.root / CLEAN_STATS

    @property
    def dedup_state(self) -> Path:
        return self.root / DEDUP_STATE

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def dataset(self) -> Path:
        return self.root / DATASET

    @property
    def stages(self) -> Path:
        return self.root / STAGES

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    def stage(self, name: str) -> Path:
        """The run directory of stage ``name`` (``stages/<name>``)."""
        return self.root / STAGES / name


def read_jsonl_numbered(
    path: Path,
    *,
    what: str = "",
    skip_invalid: bool = False,
    torn_tail_ok: bool = False,
    kind: str = "JSON line",
) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` for each non-blank line of ``path``, read without following a symlink.

    A line that is not JSON raises :class:`RunDirError` naming ``file:line`` (``what``, e.g. "plan the run
    again", replaces the default way out); with ``skip_invalid`` it is skipped (a reader that must never fail
    on one, like the report); with ``torn_tail_ok`` a last line without newline (a crash mid-write) is
    skipped with a warning.
    """
    at = [0, True]  # line number and newline-terminated? of the line jsonlines is parsing now

    def lines(fp: BinaryIO) -> Iterator[bytes]:
        for n, line in enumerate(fp, 1):
            if line.strip():
                at[0], at[1] = n, line.endswith(b"\n")
                yield line

    with open_read(path) as fp, jsonlines.Reader(lines(fp), loads=orjson.loads) as reader:
        while True:
            try:
                value = reader.read(allow_none=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as e:
                if skip_invalid:
                    continue
                if torn_tail_ok and not at[1]:
                    log.warning("%s:%d: skipping a torn last line", path, at[0])
                    return
                reason = str(e).split(":", 1)[0]  # "line contains invalid json", "... not valid utf-8"
                raise RunDirError(
                    f"{path}:{at[0]}: not a {kind} ({reason}); {what or 'fix or remove that line, then rerun'}"
                ) from None
            yield at[0], value


def read_jsonl(
    path: Path, *, what: str = "", skip_invalid: bool = False, torn_tail_ok: bool = False
) -> Iterator[Any]:
    """The JSON values of ``path`` (see :func:`read_jsonl_numbered`)."""
    for _, value in read_jsonl_numbered(
        path, what=what, skip_invalid=skip_invalid, torn_tail_ok=torn_tail_ok
    ):
        yield value


def iter_records(path: Path, *, what: str = "fix or remove the line") -> Iterator[Record]:
    """The :class:`Record` of each line of ``path``; a line that is not one raises :class:`RunDirError`
    naming ``file:line`` and ``what`` to do."""
    for lineno, data in read_jsonl_numbered(path, what=what, kind="Record line"):
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            yield Record.from_dict(data)
        except (ValueError, TypeError) as e:
            raise RunDirError(f"{path}:{lineno}: not a Record line ({e}); {what}") from None


def read_plan(run_dir: Path) -> Iterator[Record]:
    """The planned Records of ``run_dir`` (its plan.jsonl), in plan order."""
    path = RunPaths(run_dir).plan
    try:
        path.stat()
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot read the plan ({e.strerror}); plan the run first (--dry-run)"
        ) from None
    return iter_records(path, what="plan the run again")


def json_line(value: Any) -> bytes:
    """``value`` as one JSON line (orjson: UTF-8, compact, like every run-directory JSONL file); the stdlib
    spells what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    """Replace ``path`` with ``rows`` as compact JSON lines, atomically; returns the number of lines."""
    n = 0
    try:
        with AtomicFile(path) as f, jsonlines.Writer(f.file, dumps=orjson.dumps) as writer:
            for row in rows:
                writer.write(row)
                n += 1
    except OSError as e:  # the temp file is already removed
        raise _cannot_write(path, e) from None
    return n


def read_json(path: Path) -> Any:
    """The JSON value in ``path`` (refusing a symlink); invalid JSON raises :class:`RunDirError`."""
    with open_read(path) as fp:
        data = fp.read()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise RunDirError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix or delete the file") from None


def read_json_if_exists(path: Path) -> Any:
    """:func:`read_json`, or None when ``path`` does not exist; any other OS error raises
    :class:`RunDirError` naming the file."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot read ({e.strerror or e}); fix its permissions or delete it"
        ) from None


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Replace ``path`` with ``data`` as indented JSON (2 spaces, newline-terminated), atomically; an OS
    error raises :class:`RunDirError`."""
    option = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
    if sort_keys:
        option |= orjson.OPT_SORT_KEYS
    try:
        atomic_write_bytes(path, orjson.dumps(data, option=option))
    except OSError as e:
        raise _cannot_write(path, e) from None


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``run_dir``, or None when it has none."""
    path = RunPaths(run_dir).manifest
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a JSON object; restore it or remove the run directory")
    return data


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of ``run_dir`` atomically."""
    write_json(RunPaths(run_dir).manifest, manifest)


def _cannot_write(path: Path, e: OSError) -> RunDirError:
    return RunDirError(
        f"{path}: cannot write ({e.strerror or e}); free disk space or fix permissions, then rerun the same command"
    )


class AtomicFile:
    """A binary file written under ``<name>.tmp`` and renamed over ``path`` when the ``with`` block ends
    cleanly (fsynced, directory fsynced); on an exception the temp file is removed and ``path`` unchanged.

    Use :meth:`commit` / :meth:`abort` directly when several files must be swapped in together. An OS
    error (full disk, permissions) raises :class:`RunDirError` naming ``path``; a symlink is refused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        try:
            fd = open_nofollow(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError as e:
            raise _cannot_write(path, e) from None
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.abort()
            raise _cannot_write(self.path, e) from None

    def commit(self) -> None:
        """fsync the temp file, rename it over ``path`` and fsync the directory."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise _cannot_write(self.path, e) from None
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Close and remove the temp file; ``path`` is untouched."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
