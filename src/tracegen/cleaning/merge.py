"""Merge run directories (shards of one plan, resumed or separate runs) into one new run directory.

``merge([a, b, ...], out)`` writes ``out`` as an ordinary run directory, so ``clean``, ``export``, ``stats``
and ``push`` treat it like any other:

* ``plan.jsonl``: the plans concatenated in the order given; a planned record already planned by an earlier
  run (same id and same content key, e.g. shards or a rerun of the same plan) is written once.
* ``traces.jsonl``, ``failed.jsonl``, ``ledger.jsonl``: concatenated. ``rejected.jsonl``: the engine's lines
  (stages source/plan/generate); filter/dedup lines are made again by the clean step.
* ids: OpenOrca ids ``{submix}.{n}`` restart at 0 in every run, so two runs with different plans reuse the
  same ids for different questions. When a run has an id that an earlier run used for other content, the
  whole run is renumbered: ``n`` is shifted past the largest ``n`` used so far for that submix (ids that are
  not ``{submix}.{n}`` get a ``.m{k}`` suffix). The shift per run is in ``manifest.json`` (``merged_from``).
* ``manifest.json``: ``merged_from`` (each run's name, its manifest, counts, id shift) plus the first run's
  ``config``/``teacher``/``plan_params`` so tools that read one config keep working. Different teacher
  models are allowed: each record keeps its own ``model``/``model_returned``, and ``models`` lists them all.
* ``stats.json`` / ``plan_stats.json``: numbers summed over the runs (costs, tokens, counts), other values
  kept when equal and listed per run otherwise; ``totals``: cost and tokens summed from the traces themselves.
* Then (``clean_output=True``) :func:`tracegen.cleaning.postprocess.clean` runs on the result: filters and global
  dedup across all runs, in merged plan order; ``requests.jsonl`` is not written (a merged directory is
  exported, not resumed).

Refused (RunDirError): no run dirs, a run dir without ``traces.jsonl``, the same dir twice, an output that is
one of the inputs or inside one, an output that exists and is not empty (unless ``overwrite=True``).

Crash-safe: the output holds ``.merge-in-progress`` from the moment it is claimed until the merge (and, for
``tracegen merge``, its clean and export: :func:`release_output`) is done; a rerun after a kill finds the
marker and redoes the merge from scratch instead of refusing a non-empty output. The inputs are only read.
"""

from __future__ import annotations

import json
import re
import shutil
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

from .._version import __version__
from ..errors import RunDirError
from ..records import content_key
from ..rundir import LOCK_NAME, AtomicFile, RunPaths, atomic_write_bytes, open_read, read_json, write_json
from .dedup import DedupConfig
from .filters import FilterConfig
from .postprocess import ENGINE_STAGES, CleanResult, clean

__all__ = ["IN_PROGRESS", "MergeResult", "claim_output", "merge", "release_output"]

#: In a merge's output while it is being written; an output holding it is an interrupted merge.
IN_PROGRESS = ".merge-in-progress"

_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')
_KEY = re.compile(rb'"key"\s*:\s*"([0-9a-f]*)"')
_COST = re.compile(rb'"cost_usd"\s*:\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_MODEL = re.compile(rb'"model_returned"\s*:\s*"((?:[^"\\]|\\.)*)"')
_MODEL_ASKED = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
_NUMBERED = re.compile(r"^(?P<prefix>.+)\.(?P<n>\d+)$")


@dataclass
class MergeResult:
    """What merge() wrote; :meth:`to_dict` for the CLI and stats."""

    output: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    plan_rows: int = 0
    repeated_plan_rows: int = 0
    trace_rows: int = 0
    failed_rows: int = 0
    engine_rejected_rows: int = 0
    renamed_runs: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    models: dict[str, int] = field(default_factory=dict)
    clean: CleanResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (run names, not local paths)."""
        return {
            "output": self.output.name,
            "runs": self.runs,
            "plan_rows": self.plan_rows,
            "repeated_plan_rows": self.repeated_plan_rows,
            "trace_rows": self.trace_rows,
            "failed_rows": self.failed_rows,
            "engine_rejected_rows": self.engine_rejected_rows,
            "renamed_runs": self.renamed_runs,
            "cost_usd": round(self.cost_usd, 6),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "models": dict(sorted(self.models.items())),
            "clean": self.clean.to_dict() if self.clean is not None else None,
        }


# ---- id bookkeeping ----------------------------------------------------------------------------------------
def _h(data: bytes) -> int:
    return int(xxhash.xxh3_64_intdigest(data))


class _IdIndex:
    """id hash -> content key hash for every id written so far (sorted numpy arrays, 16 bytes per id)."""

    def __init__(self) -> None:
        self.ids: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self.keys: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)

    def lookup(self, ids: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint64]]:
        """(known?, key hash) per id hash."""
        if self.ids.size == 0:
            return np.zeros(ids.shape, dtype=bool), np.zeros(ids.shape, dtype=np.uint64)
        idx = np.searchsorted(self.ids, ids)
        idx[idx == self.ids.size] = 0
        known = self.ids[idx] == ids
        return known, self.keys[idx]

    def add(self, ids: npt.NDArray[np.uint64], keys: npt.NDArray[np.uint64]) -> None:
        all_ids = np.concatenate([self.ids, ids])
        all_keys = np.concatenate([self.keys, keys])
        uniq, first = np.unique(all_ids, return_index=True)  # an id keeps its first content key
        self.ids, self.keys = uniq, all_keys[first]


def _u64(values: array[int]) -> npt.NDArray[np.uint64]:
    return np.frombuffer(values, dtype=np.uint64).copy() if values else np.zeros(0, dtype=np.uint64)


def _json_id(raw: bytes) -> str:
    value = json.loads(b'"' + raw + b'"')
    assert isinstance(value, str)
    return value


def _line_key(line: bytes) -> bytes:
    m = _KEY.search(line)
    if m is not None and m.group(1):
        return m.group(1)
    data = json.loads(line)
    return content_key(str(data.get("system_prompt") or ""), str(data.get("question") or "")).encode()


def _id_key_hashes(paths: Sequence[Path]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], list[str]]:
    """(id hashes, key hashes, distinct numbered prefixes + max n as "prefix\\tn") of plan and trace lines."""
    ids, keys = array("Q"), array("Q")
    max_n: dict[str, int] = {}
    for path in paths:
        for line in _lines(path):
            m = _ID.search(line)
            if m is None:
                continue
            ids.append(_h(m.group(1)))
            keys.append(_h(_line_key(line)))
            _note_max(max_n, _json_id(m.group(1)))
    return _u64(ids), _u64(keys), [f"{p}\t{n}" for p, n in max_n.items()]


def _note_max(max_n: dict[str, int], rid: str) -> None:
    m = _NUMBERED.match(rid)
    if m:
        n = int(m.group("n"))
        if n > max_n.get(m.group("prefix"), -1):
            max_n[m.group("prefix")] = n


class _Renamer:
    """Maps a run's ids to merged ids: identity, or ``{prefix}.{n + shift[prefix]}`` for a renumbered run."""

    def __init__(self, k: int, shift: dict[str, int] | None) -> None:
        self.k = k
        self.shift = shift

    def __call__(self, rid: str) -> str:
        if self.shift is None:
            return rid
        m = _NUMBERED.match(rid)
        if m and m.group("prefix") in self.shift:
            return f"{m.group('prefix')}.{int(m.group('n')) + self.shift[m.group('prefix')]}"
        return f"{rid}.m{self.k}"


# ---- IO helpers --------------------------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[bytes]:
    """Complete lines of a JSONL file (a torn last line without newline is skipped)."""
    if not path.is_file():
        return
    with open_read(path) as f:
        for line in f:
            if line.strip() and line.endswith(b"\n"):
                yield line


def _rename_line(line: bytes, rename: _Renamer, nested: str | None = None) -> bytes:
    if rename.shift is None:
        return line
    data = json.loads(line)
    if isinstance(data.get("id"), str):
        data["id"] = rename(data["id"])
    if nested and isinstance(data.get(nested), dict) and isinstance(data[nested].get("id"), str):
        data[nested]["id"] = rename(data[nested]["id"])
    if isinstance(data.get("custom_id"), str):
        data["custom_id"] = rename(data["custom_id"])
    return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, RunDirError):
        return None


def _combine(values: list[Any]) -> Any:
    """Sum numbers, recurse into dicts, keep equal values, list differing ones."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        total = sum(present)
        return round(total, 9) if isinstance(total, float) else total
    if all(isinstance(v, dict) for v in present):
        keys: list[str] = []
        for v in present:
            keys += [k for k in v if k not in keys]
        return {k: _combine([v.get(k) for v in present]) for k in keys}
    if all(v == present[0] for v in present):
        return present[0]
    return values


def _check_inputs(run_dirs: Sequence[Path], output: Path, overwrite: bool) -> list[Path]:
    if not run_dirs:
        raise RunDirError("merge needs at least one run directory")
    resolved = []
    for d in run_dirs:
        if not RunPaths(d).traces.is_file():
            raise RunDirError(f"{d}: not a run directory (no traces.jsonl); check the path")
        r = d.resolve()
        if r in resolved:
            raise RunDirError(f"{d}: given twice; list each run directory once")
        resolved.append(r)
    out = output.resolve()
    for r in resolved:
        if out == r or r in out.parents:
            raise RunDirError(f"{output}: the output must not be an input run directory or inside one")
    claim_output(output, overwrite)
    return resolved


def claim_output(output: Path, overwrite: bool = False) -> None:
    """Make ``output`` an empty directory marked in progress (see the module docstring).

    Refused when it exists and is not empty, unless ``overwrite`` or it is an interrupted merge.
    """
    if output.exists():
        if not output.is_dir():
            raise RunDirError(f"{output}: exists and is not a directory; choose another --output")
        if any(p.name != LOCK_NAME for p in output.iterdir()):
            if not (overwrite or (output / IN_PROGRESS).exists()):
                raise RunDirError(f"{output}: exists and is not empty; choose a new --output")
            for p in output.iterdir():  # ours, interrupted (or overwrite asked): redo it from scratch
                if p.name == LOCK_NAME:  # held by this process: keep it
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
    try:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output / IN_PROGRESS, b"a tracegen merge is writing this directory\n")
    except OSError as e:
        raise RunDirError(f"{output}: cannot write ({e.strerror}); choose another --output") from None


def release_output(output: Path) -> None:
    """The merge into ``output`` (and its stages) is complete: drop the in-progress markers."""
    for marker in [output / IN_PROGRESS, *output.glob(f"stages/*/{IN_PROGRESS}")]:
        marker.unlink(missing_ok=True)


# ---- merge -------------------------------------------------------------------------------------------------
def merge(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    *,
    filter_config: FilterConfig | None = None,
    dedup_config: DedupConfig | None = None,
    clean_output: bool = True,
    overwrite: bool = False,
) -> MergeResult:
    """Combine ``run_dirs`` into the new run directory ``output`` and clean it (global dedup).

    ``filter_config`` / ``dedup_config`` default to the first run's settings (its manifest config), else to
    the defaults.
    """
    dirs = [Path(d) for d in run_dirs]
    out = Path(output)
    _check_inputs(dirs, out, overwrite)
    result = MergeResult(output=out)
    index = _IdIndex()
    max_n: dict[str, int] = {}
    manifests = [_read_json(RunPaths(d).manifest) for d in dirs]
    paths = RunPaths(out)
    files = {
        name: AtomicFile(path)
        for name, path in (
            ("plan", paths.plan),
            ("traces", paths.traces),
            ("failed", paths.failed),
            ("rejected", paths.rejected),
            ("ledger", paths.ledger),
        )
    }
    models: Counter[str] = Counter()
    try:
        for k, d in enumerate(dirs):
            plan_file = RunPaths(d).plan
            sources = [plan_file, RunPaths(d).traces] if plan_file.is_file() else [RunPaths(d).traces]
            ids, keys, maxes = _id_key_hashes(sources)
            known, old_keys = index.lookup(ids)
            conflict = bool((known & (old_keys != keys)).any())
            run_max = {p: int(n) for p, n in (s.split("\t") for s in maxes)}
            shift = {p: max_n.get(p, -1) + 1 for p in run_max} if conflict else None
            rename = _Renamer(k, shift)
            info: dict[str, Any] = {
                "name": d.name,
                "renumbered": conflict,
                "id_shift": shift or {},
                "plan_rows": 0,
                "trace_rows": 0,
            }
            result.renamed_runs += int(conflict)
            # plan.jsonl (skip rows an earlier run planned with the same id and content).
            written_ids, written_keys = array("Q"), array("Q")
            for line in _lines(plan_file):
                m = _ID.search(line)
                if m is None:
                    continue
                new_id = rename(_json_id(m.group(1)))
                id_h = _h(json.dumps(new_id)[1:-1].encode("utf-8"))
                key_h = _h(_line_key(line))
                seen, seen_key = index.lookup(np.array([id_h], dtype=np.uint64))
                if seen[0] and seen_key[0] == key_h:
                    result.repeated_plan_rows += 1
                    continue
                files["plan"].write(_rename_line(line, rename))
                written_ids.append(id_h)
                written_keys.append(key_h)
                _note_max(max_n, new_id)
                info["plan_rows"] += 1
            # traces.jsonl
            for line in _lines(RunPaths(d).traces):
                files["traces"].write(_rename_line(line, rename))
                info["trace_rows"] += 1
                m = _ID.search(line)
                if m is not None:
                    new_id = rename(_json_id(m.group(1)))
                    _note_max(max_n, new_id)
                    written_ids.append(_h(json.dumps(new_id)[1:-1].encode("utf-8")))
                    written_keys.append(_h(_line_key(line)))
                _tally(line, result, models)
            index.add(_u64(written_ids), _u64(written_keys))
            for line in _lines(RunPaths(d).failed):
                files["failed"].write(_rename_line(line, rename))
                result.failed_rows += 1
            for line in _lines(RunPaths(d).rejected):
                try:
                    stage = json.loads(line).get("stage")
                except (ValueError, AttributeError):
                    continue
                if stage in ENGINE_STAGES:
                    files["rejected"].write(_rename_line(line, rename, nested="record"))
                    result.engine_rejected_rows += 1
            for line in _lines(RunPaths(d).ledger):
                files["ledger"].write(line)
            result.plan_rows += info["plan_rows"]
            result.trace_rows += info["trace_rows"]
            result.runs.append(info)
        for f in files.values():
            f.commit()
    except BaseException:
        for f in files.values():
            f.abort()
        raise
    result.models = dict(models)

    first: dict[str, Any] = next((m for m in manifests if isinstance(m, dict)), {})
    manifest = {
        "tracegen_version": __version__,
        "merged": True,
        "merged_from": [
            {**info, "manifest": m if isinstance(m, dict) else None}
            for info, m in zip(result.runs, manifests, strict=True)
        ],
        "models": sorted(models),
        "config": first.get("config", {}),
        "teacher": first.get("teacher", {}),
        "plan_params": first.get("plan_params", {}),
    }
    write_json(paths.manifest, manifest)
    stats = [_read_json(RunPaths(d).stats) for d in dirs]
    combined = _combine([s for s in stats if isinstance(s, dict)]) or {}
    combined["merged_runs"] = len(dirs)
    combined["totals"] = {
        "cost_usd": round(result.cost_usd, 6),
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "answered": result.trace_rows,
    }
    write_json(paths.stats, combined)
    plan_stats = [s for s in (_read_json(RunPaths(d).plan_stats) for d in dirs) if isinstance(s, dict)]
    if plan_stats:
        write_json(paths.plan_stats, _combine(plan_stats))

    if clean_output:
        config: dict[str, Any] = first["config"] if isinstance(first.get("config"), dict) else {}
        if filter_config is None:
            filter_config = FilterConfig.model_validate(config.get("filters") or {})
        if dedup_config is None:
            # as the runs' own clean step: exact_question follows the plan's dedup unless dedup: sets it
            settings = {"exact_question": bool(config.get("plan_dedup_questions", False))}
            dedup_config = DedupConfig.model_validate(settings | (config.get("dedup") or {}))
        result.clean = clean(out, filter_config, dedup_config)
        release_output(out)
    return result


def _tally(line: bytes, result: MergeResult, models: Counter[str]) -> None:
    cost = _COST.search(line)
    if cost is not None:
        result.cost_usd += float(cost.group(1))
    prompt = _PROMPT.search(line)
    if prompt is not None:
        result.prompt_tokens += int(prompt.group(1))
    completion = _COMPLETION.search(line)
    if completion is not None:
        result.completion_tokens += int(completion.group(1))
    model = _MODEL_ASKED.search(line)
    returned = _MODEL.search(line)
    name = returned.group(1) if returned and returned.group(1) else (model.group(1) if model else b"")
    models[_json_id(name) or "unknown"] += 1
