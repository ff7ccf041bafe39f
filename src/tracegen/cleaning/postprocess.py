"""Clean a run directory: ``traces.jsonl`` -> filtered, answer-checked, deduplicated ``clean.jsonl``.

:func:`clean` is idempotent: it always starts from the whole ``traces.jsonl`` (so resumed runs are covered),
and running it twice gives byte-identical files.

1. Plan order. ``traces.jsonl`` is in completion order; ``plan.jsonl`` gives the order the dataset is
   published in. Each plan id is hashed to 8 bytes and kept in a sorted numpy array with its position;
   each trace line is reduced to (plan position, byte offset, length). Records are then read back by offset in
   plan order, so memory is ~40 bytes per record whatever the answer sizes. Traces whose id is not in the plan
   (or a run dir without ``plan.jsonl``) follow the planned ones in file order.
2. A trace line that cannot be parsed (a torn last line after a crash; anything else is logged too) is
   skipped and counted (``unreadable_lines``). An id answered twice keeps its LAST answer; the earlier ones
   go to ``rejected.jsonl`` as ``stage="dedup", reason="duplicate_id"``.
3. Each record gets ``agrees_with_target`` from :mod:`tracegen.cleaning.answer_check`, then goes through the quality
   filters (:mod:`tracegen.cleaning.filters`) and dedup (:mod:`tracegen.cleaning.dedup`), in plan order.
4. Outputs, each written to a temp file, fsynced and renamed: ``clean.jsonl`` (kept records,
   ``Record.to_dict()`` per line, plan order), ``rejected.jsonl`` (the engine's own lines of stages
   source/plan/generate kept as they were, previous filter/dedup lines replaced by this run's),
   ``clean_stats.json`` (:meth:`CleanResult.to_dict`) and ``dedup_state.npz`` (keys of the kept records, so a
   later run or ``merge`` can deduplicate against this one).
"""

from __future__ import annotations

import json
import logging
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson
import xxhash

from ..errors import RunDirError
from ..records import Record
from ..rundir import (
    CLEAN,
    CLEAN_STATS,
    DEDUP_STATE,
    PLAN,
    REJECTED,
    TRACES,
    AtomicFile,
    json_line,
    open_read,
    read_jsonl,
    write_json,
)
from . import handoff
from .answer_check import check_answer
from .dedup import DedupConfig, Deduper, DedupState, public_settings
from .filters import FilterConfig, FilterPipeline, build_filters
from .precheck import Prechecker

__all__ = ["ENGINE_STAGES", "CleanResult", "clean", "iter_jsonl", "plan_order"]

log = logging.getLogger(__name__)

ENGINE_STAGES = frozenset({"source", "plan", "generate"})
"""rejected.jsonl stages written by the engine; clean() keeps these lines untouched."""
CLEAN_STAGES = frozenset({"filter", "dedup"})


_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')
Progress = Callable[[int, int], None]


# ---- result ------------------------------------------------------------------------------------------------
@dataclass
class CleanResult:
    """What clean() did, as counts; :meth:`to_dict` is what goes into stats.json and the dataset card."""

    run_dir: Path
    traces_lines: int = 0
    unreadable_lines: int = 0
    duplicate_ids: int = 0
    not_in_plan: int = 0
    records: int = 0
    kept: int = 0
    rejected_by_filter: dict[str, int] = field(default_factory=dict)
    removed_by_dedup: dict[str, int] = field(default_factory=dict)
    agreement_kept: dict[str, int] = field(default_factory=dict)
    agreement_all: dict[str, int] = field(default_factory=dict)
    rows_per_submix: dict[str, int] = field(default_factory=dict)
    rows_per_system_message: dict[str, int] = field(default_factory=dict)
    rows_per_model: dict[str, int] = field(default_factory=dict)
    kept_prompt_tokens: int = 0
    kept_completion_tokens: int = 0
    kept_cost_usd: float = 0.0
    filter_config: dict[str, Any] = field(default_factory=dict)
    dedup_config: dict[str, Any] = field(default_factory=dict)
    answer_check: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-able counts (no paths: the card must not leak local directories)."""
        return {
            "traces_lines": self.traces_lines,
            "unreadable_lines": self.unreadable_lines,
            "duplicate_ids": self.duplicate_ids,
            "not_in_plan": self.not_in_plan,
            "records": self.records,
            "kept": self.kept,
            "rejected_by_filter": dict(sorted(self.rejected_by_filter.items())),
            "removed_by_dedup": dict(sorted(self.removed_by_dedup.items())),
            "answer_check": {
                "enabled": self.answer_check,
                "kept": self.agreement_kept,
                "all": self.agreement_all,
            },
            "rows_per_submix": dict(sorted(self.rows_per_submix.items())),
            "rows_per_system_message": dict(sorted(self.rows_per_system_message.items(), key=_msg_order)),
            "rows_per_model": dict(sorted(self.rows_per_model.items())),
            "kept_prompt_tokens": self.kept_prompt_tokens,
            "kept_completion_tokens": self.kept_completion_tokens,
            "kept_cost_usd": round(self.kept_cost_usd, 6),
            "filters": self.filter_config,
            "dedup": self.dedup_config,
        }


def _msg_order(item: tuple[str, int]) -> tuple[int, str]:
    key = item[0]
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def _agreement(counter: Counter[bool | None]) -> dict[str, int]:
    return {"true": counter[True], "false": counter[False], "null": counter[None]}


# ---- reading -----------------------------------------------------------------------------------------------
def _id_hash(raw: bytes) -> int:
    return int(xxhash.xxh3_64_intdigest(raw))


def _line_id(line: bytes) -> bytes | None:
    """The record id as JSON-escaped bytes, found without parsing the whole line (falls back to json)."""
    m = _ID.search(line)
    if m is not None:
        return m.group(1)
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return json.dumps(data["id"])[1:-1].encode("utf-8")
    return None


def _scan(path: Path) -> Iterator[tuple[int, int, bytes | None]]:
    """(offset, length, id or None if unreadable) for every non-blank line of a JSONL file."""
    offset = 0
    with open_read(path) as f:
        for line in f:
            n = len(line)
            if not line.isspace():  # == line.strip() is not empty (the same ASCII whitespace), without a copy
                ok = line.endswith(b"\n") or _parses(line)
                yield offset, n, (_line_id(line) if ok else None)
            offset += n


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    """``length`` bytes of ``f`` at ``offset`` (fewer at its end), as ``f.seek(offset); f.read(length)`` but
    with one ``pread`` call: no seek, and no refill of the read buffer for a line elsewhere in the file."""
    if not hasattr(os, "pread"):  # not on Windows
        f.seek(offset)
        return f.read(length)
    data = os.pread(f.fileno(), length, offset)
    while 0 < len(data) < length:  # a short read (not at the end): read on, as BufferedReader.read does
        more = os.pread(f.fileno(), length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _loads(line: bytes) -> tuple[Any, bool]:
    """orjson's parse (several times faster), stdlib json where orjson refuses (NaN, integers past 64 bits);
    with whether orjson read it (the hand-off notes only what the readers' parser, orjson, reads alike)."""
    try:
        return orjson.loads(line), True
    except orjson.JSONDecodeError:
        return json.loads(line), False


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def iter_jsonl(path: Path, *, tolerate_torn_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Dicts from a JSONL file; a torn last line (no newline, not valid JSON) is skipped and logged."""
    for data in read_jsonl(path, torn_tail_ok=tolerate_torn_tail):
        if isinstance(data, dict):
            yield data


@dataclass
class _PlanIndex:
    hashes: npt.NDArray[np.uint64]  # sorted id hashes
    positions: npt.NDArray[np.int64]  # plan position of each
    size: int

    def lookup(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Plan position per id hash, -1 when the id is not planned."""
        if self.hashes.size == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        idx = np.searchsorted(self.hashes, ids)
        idx[idx == self.hashes.size] = 0
        found = self.hashes[idx] == ids
        return np.where(found, self.positions[idx], -1).astype(np.int64)


def plan_order(plan_path: Path) -> _PlanIndex:
    """Index of ``plan.jsonl``: id hash -> position (first occurrence), 16 bytes per planned record."""
    if not plan_path.is_file():
        return _PlanIndex(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0)
    hashes = array("Q")
    for _, _, rid in _scan(plan_path):
        if rid is not None:
            hashes.append(_id_hash(rid))
    arr = np.frombuffer(hashes, dtype=np.uint64).copy() if hashes else np.zeros(0, dtype=np.uint64)
    uniq, first = np.unique(arr, return_index=True)
    return _PlanIndex(uniq, first.astype(np.int64), len(arr))


# ---- writing -----------------------------------------------------------------------------------------------
_FIELDS = tuple(f.name for f in fields(Record))


def _record_dict(record: Record) -> dict[str, Any]:
    """``Record.to_dict()`` without ``dataclasses.asdict``'s deep copies (every field is a flat value)."""
    return {name: getattr(record, name) for name in _FIELDS}


def _record_line(record: Record, notes: _HandOff | None = None) -> bytes:
    """``json_line(record.to_dict())``: orjson writes a dataclass natively, its fields in declaration order
    (the same bytes without building the dict); the stdlib's spelling where orjson refuses a value (which
    makes ``notes`` inexact: orjson, the readers' parser, would not read the line back as the record)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        if notes is not None:
            notes.exact = False
        return json_line(_record_dict(record))


def _rejected_line(
    record: Record, stage: str, reason: str, detail: str, notes: _HandOff | None = None
) -> bytes:
    data: dict[str, Any] = {"id": record.id, "stage": stage, "reason": reason, "detail": detail}
    try:
        return orjson.dumps({**data, "record": record}, option=orjson.OPT_APPEND_NEWLINE)  # as _record_line
    except TypeError:
        if notes is not None:
            notes.exact = False
        return json_line({**data, "record": _record_dict(record)})


class _HandOff:
    """What clean notes (:mod:`.handoff`) for the export and the report that follow in the same process."""

    def __init__(self, lines: int) -> None:
        self.traces: list[tuple[Any, ...] | None] = [None] * lines
        """The report's fields of each readable trace line, by file index."""
        self.kept: list[tuple[Any, ...]] = []
        """The kept records' field values (:func:`handoff.record_values`), in clean.jsonl's order."""
        self.rejected: list[handoff.Rejected] = []
        """What the report counts of each rejected.jsonl line, in file order."""
        self.exact = True
        """False once a line was read or written with the stdlib instead of orjson (the readers' parser)."""

    def reject(self, record: Record, stage: str, reason: str) -> None:
        """Note a rejected.jsonl line clean writes for ``record``."""
        self.rejected.append((stage, reason, "", str(record.submix), record.agrees_with_target))

    def note(self, traces: Path, clean: Path, rejected: Path, all_read: bool) -> None:
        """Hand the notes over; the trace fields only when every traces line was read (else the report's
        own read, which skips what it cannot parse, counts other lines)."""
        if not self.exact:
            return
        handoff.note("kept", clean, self.kept)
        if len(self.rejected) <= handoff.MAX_ROWS:
            handoff.note("rejected", rejected, self.rejected)
        if all_read and all(t is not None for t in self.traces):
            handoff.note("traces", traces, self.traces)


# ---- the clean step ----------------------------------------------------------------------------------------
def clean(
    run_dir: str | Path,
    filter_config: FilterConfig | None = None,
    dedup_config: DedupConfig | None = None,
    *,
    against: Sequence[str | Path] = (),
    answer_check: bool = True,
    progress: Progress | None = None,
    prechecked: Prechecker | None = None,
    hand_off: bool = False,
) -> CleanResult:
    """Filter, answer-check and deduplicate ``run_dir/traces.jsonl`` into ``run_dir/clean.jsonl``.

    ``against``: dedup state files (``dedup_state.npz`` of other run dirs) whose records count as already
    kept, so this run drops what they already hold. ``progress(done, total)`` is called every 1000 records.
    ``prechecked``: verdicts computed during generation (:mod:`.precheck`), used for the lines they cover
    when computed with the same settings (the files are the same either way). ``hand_off``: note the kept
    records and the report's trace fields for the export and the report that follow in this process
    (:mod:`.handoff`); the files are the same either way.
    """
    run_dir = Path(run_dir)
    traces = run_dir / TRACES
    if not traces.is_file():
        raise RunDirError(f"{run_dir}: no {TRACES}; run `tracegen run` first (or check the directory)")
    filter_config = filter_config or FilterConfig()
    dedup_config = dedup_config or DedupConfig()
    if prechecked is not None and not prechecked.serves(filter_config, answer_check):
        prechecked = None
    same_keys = prechecked is not None and prechecked.serves_keys(dedup_config)
    known_keys: dict[int, bytes] = {}  # id() of a record on its way to dedup -> its keys computed earlier
    pipeline = FilterPipeline(build_filters(filter_config))
    state = DedupState.empty(dedup_config)
    for path in against:
        state.update(DedupState.load(path, dedup_config))
    deduper = Deduper(dedup_config, state)
    result = CleanResult(
        run_dir=run_dir,
        filter_config=filter_config.public_dict(),
        dedup_config=public_settings(dedup_config),
        answer_check=answer_check,
    )

    # 1. Where each trace line goes in plan order.
    plan = plan_order(run_dir / PLAN)
    offsets = array("q")  # 8 bytes per trace line, not a Python int object each
    lengths = array("q")
    id_hashes = array("Q")
    for offset, length, rid in _scan(traces):
        result.traces_lines += 1
        if rid is None:
            result.unreadable_lines += 1
            log.warning("%s: skipping an unreadable line at byte %d", traces, offset)
            continue
        offsets.append(offset)
        lengths.append(length)
        id_hashes.append(_id_hash(rid))
    hashes = np.frombuffer(id_hashes, dtype=np.uint64).copy() if id_hashes else np.zeros(0, dtype=np.uint64)
    del id_hashes
    pos = plan.lookup(hashes)
    missing = pos < 0
    result.not_in_plan = int(missing.sum())
    pos[missing] = plan.size + np.flatnonzero(missing)
    # The last answer of an id wins: among equal ids keep the highest file index.
    file_index = np.arange(hashes.size, dtype=np.int64)
    by_id = np.lexsort((-file_index, hashes))
    superseded = np.zeros(hashes.size, dtype=bool)
    if hashes.size > 1:
        same = hashes[by_id][1:] == hashes[by_id][:-1]
        superseded[by_id[1:][same]] = True
    result.duplicate_ids = int(superseded.sum())
    order = np.lexsort((file_index, pos))  # plan order; equal positions (duplicate ids) in file order
    del hashes, pos, by_id

    # 2. Read records back in plan order, annotate, filter, dedup, write.
    for kind in ("kept", "traces", "rejected"):  # any notes of these files are this run's from here on
        handoff.forget(kind)
    notes = _HandOff(len(offsets)) if hand_off and 0 < len(offsets) <= handoff.MAX_ROWS else None
    rejected = AtomicFile(run_dir / REJECTED)
    kept_out = AtomicFile(run_dir / CLEAN)
    try:
        _copy_engine_rejections(run_dir / REJECTED, rejected, notes)

        def on_reject(record: Record, stage: str, reason: str, detail: str) -> None:
            rejected.write(_rejected_line(record, stage, reason, detail, notes))
            if notes is not None:
                notes.reject(record, stage, reason)

        agree_all: Counter[bool | None] = Counter()
        agree_kept: Counter[bool | None] = Counter()
        submix: Counter[str] = Counter()
        message: Counter[str] = Counter()
        model: Counter[str] = Counter()
        total = int(order.size)

        def records() -> Iterator[Record]:
            with open_read(traces) as f:
                for done, i in enumerate(order.tolist(), 1):
                    line = _read_at(f, offsets[i], lengths[i])
                    try:
                        data, by_orjson = _loads(line)
                        if notes is not None and not by_orjson:
                            notes.exact = False
                        record = Record.from_dict(data)
                    except (ValueError, TypeError) as e:
                        result.unreadable_lines += 1
                        log.warning("%s: skipping an unreadable line at byte %d (%s)", traces, offsets[i], e)
                        continue
                    if notes is not None:
                        notes.traces[i] = handoff.trace_fields(data)
                    known = prechecked.verdict(line) if prechecked is not None else None
                    if answer_check:
                        record.agrees_with_target = (
                            known[0]
                            if known is not None
                            else check_answer(record.question, record.target, record.response)
                        )
                    if progress is not None and done % 1000 == 0:
                        progress(done, total)
                    if superseded[i]:
                        on_reject(record, "dedup", "duplicate_id", "id answered again later in traces.jsonl")
                        continue
                    agree_all[record.agrees_with_target] += 1
                    verdict = known[1] if known is not None else pipeline.check(record)
                    if pipeline.take(record, verdict, on_reject):
                        if same_keys and known is not None and known[2] is not None:
                            known_keys[id(record)] = known[2]
                        yield record

        def keys_of(record: Record) -> bytes | None:
            return known_keys.pop(id(record), None)

        for record in deduper.run(records(), on_reject, keys_of if same_keys else None):
            kept_out.write(_record_line(record, notes))
            if notes is not None:
                notes.kept.append(handoff.record_values(record))
            result.kept += 1
            agree_kept[record.agrees_with_target] += 1
            submix[record.submix] += 1
            message[str(record.system_message_id) if record.system_message_id is not None else "none"] += 1
            model[record.model_returned or record.model or "unknown"] += 1
            result.kept_prompt_tokens += record.prompt_tokens
            result.kept_completion_tokens += record.completion_tokens
            result.kept_cost_usd += record.cost_usd
        if progress is not None:
            progress(total, total)
        kept_out.commit()
        rejected.commit()
        if notes is not None:
            notes.note(traces, run_dir / CLEAN, run_dir / REJECTED, all_read=result.unreadable_lines == 0)
    except BaseException:
        kept_out.abort()
        rejected.abort()
        raise

    result.rejected_by_filter = dict(pipeline.counts)
    removed = dict(deduper.counts)
    if result.duplicate_ids:
        removed["duplicate_id"] = result.duplicate_ids
    result.removed_by_dedup = removed
    result.records = sum(agree_all.values())
    result.agreement_all = _agreement(agree_all)
    result.agreement_kept = _agreement(agree_kept)
    result.rows_per_submix = dict(submix)
    result.rows_per_system_message = dict(message)
    result.rows_per_model = dict(model)
    deduper.state.save(run_dir / DEDUP_STATE)
    write_json(run_dir / CLEAN_STATS, result.to_dict())
    return result


def rejections_except(path: Path, stages: Iterable[str]) -> Iterator[bytes]:
    """The lines of a rejected.jsonl whose stage is not in ``stages`` (verbatim, newline-ended).

    Each step that rewrites rejected.jsonl (planning: source/plan; clean: filter/dedup) keeps the other
    steps' lines through this; an unreadable line (a torn tail from a crash) is dropped with a warning.
    """
    for line, _ in _rejections_except(path, stages):
        yield line


def _rejections_except(path: Path, stages: Iterable[str]) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """:func:`rejections_except`, each line with its JSON object (None when orjson could not read it)."""
    if not path.is_file():
        return
    drop = frozenset(stages)
    with open_read(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                data, exact = _loads(line)
                stage = data.get("stage")
            except (ValueError, AttributeError):
                log.warning("%s:%d: dropping an unreadable rejected.jsonl line", path, lineno)
                continue
            if stage not in drop:
                yield (line if line.endswith(b"\n") else line + b"\n"), data if exact else None


def _copy_engine_rejections(path: Path, out: AtomicFile, notes: _HandOff | None = None) -> None:
    """Keep the engine's rejected.jsonl lines (source/plan/generate) verbatim; drop old filter/dedup."""
    for line, data in _rejections_except(path, CLEAN_STAGES):
        out.write(line)
        if notes is None:
            continue
        if data is None:
            notes.exact = False
            continue
        notes.rejected.append(handoff.rejected_fields(data))
