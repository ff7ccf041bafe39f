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

Modules: the formats live in :mod:`~tracegen.publish.export_formats`, the plan-order reader in
:mod:`~tracegen.publish.export_records`, the Parquet/JSONL shard writer and the tally in
:mod:`~tracegen.publish.export_writers`; this module is the export API and re-exports their public names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .._version import __version__
from ..errors import ConfigError, RunDirError
from ..rundir import CLEAN_STATS, MANIFEST, PLAN_STATS, STATS, RunPaths, read_json_if_exists
from . import card as card_mod
from . import clean_digest as digest
from .export_formats import DEFAULT_FORMAT, FORMATS, _format, features_for
from .export_records import read_record_dicts, read_records
from .export_writers import _arrow_table as _arrow_table
from .export_writers import _ShardWriter, _Tally

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

EXPORT_MANIFEST = "export.json"
PUBLIC_RUN_FILES = (MANIFEST, STATS, PLAN_STATS, CLEAN_STATS)


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
    source, records = read_record_dicts(run)
    clean_identity = digest.file_identity(RunPaths(run).clean) if source == RunPaths(run).clean.name else None
    verdicts: Counter[tuple[str, str]] = Counter()  # for the report: see tracegen.publish.clean_digest

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
            verdicts[(str(r["submix"]), digest.verdict(r["agrees_with_target"]))] += 1
            if r["response"] is None:
                skipped += 1
                continue
            tally.add(r)
            stage = r["stage"]
            if stage not in stage_dirs:
                stage_dirs[stage] = f"stage{len(stage_dirs)}"
            for f in fmts:
                w = writers.get((f, stage))
                if w is None:
                    root = tmp / f".{f}.{stage_dirs[stage]}"
                    w = writers[(f, stage)] = _ShardWriter(
                        root, FORMATS[f].features, shard_rows, batch_rows, jsonl
                    )
                w.add(FORMATS[f].row_of_dict(r))
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
    if clean_identity is not None and digest.file_identity(RunPaths(run).clean) == clean_identity:
        digest.note(digest.CleanDigest(clean_identity, verdicts.total(), verdicts))
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
