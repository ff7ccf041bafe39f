"""Build the plan: which (system message, FLAN prompt) pairs the teacher is asked, in which order.

:func:`build_plan` reads the source **once** and never holds it in memory:

0. **Task sizes, cheaply.** :meth:`tracegen.planning.sources.Source.iter_task_keys` gives each row's (submix, task,
   template): only the metadata columns of Parquet data are read (a few bytes per row), other formats
   are read whole. The sampling rules run on these sizes to learn how many rows each task will give;
   each task keeps as **candidates** the rows whose rank (a seeded hash of the row's id) falls in its
   lowest ~1.1x-expected-picks-plus-slack fraction.
1. **The pass** classifies every row (bad / Dialog / few-shot / Big-Bench / too long, see
   :mod:`tracegen.planning.mix`), chooses its system message (:mod:`tracegen.planning.templates`), keeps an 8-byte hash of
   what would be sent and a 4-byte task number per eligible row, and keeps the candidates aside (in memory
   while they are few, else in a temporary SQLite file: :mod:`tracegen.planning.plan_spill`). Duplicates are then found from the hashes (first occurrence in source order is kept), the
   Orca rules run on the exact per-task counts, and the submixes are interleaved
   (:func:`tracegen.planning.mix.interleave`). A task picked ``k`` times contributes its ``k`` lowest-ranked kept
   rows (a uniformly random subset, as the rank is a hash); in the rare case its candidates fall short
   (dedup or too-long drops moved the sizes a lot), the source is read a second time for those tasks
   only (``source_passes`` = 2) — the plan is the same either way.
2. Prompt tokens are counted for the chosen rows only, written to the plan table by plan position.

Decisions (documented for users):

* **ids** are OpenOrca-style ``{submix}.{n}``: ``n`` is the 0-based index of the row among all well-formed
  rows of that submix in source order (few-shot and Big-Bench rows included, bad and Dialog rows not), so an
  id names the same source row whatever ``n``, ``seed`` or mix is asked.
* **Duplicates**: a row whose (system message, question) pair was already seen earlier in the source is
  dropped before sampling, so it never costs anything and never takes a quota slot; counted in
  ``dropped["duplicate"]``. With ``dedup_questions=True`` (``plan_dedup_questions``) the question alone
  decides — off by default, because the same question under different system messages is a distinct Orca
  query. The keys are exactly the clean step's ``exact_pair`` / ``exact_question`` keys (NFKC, case-folded,
  whitespace collapsed; :mod:`tracegen.cleaning.dedup`), and the pipeline's clean step dedups questions only when
  the plan did (unless ``dedup:`` says otherwise), so no answer paid for is thrown away as a duplicate
  of another planned request. Hashes are 64-bit.
* **Too long**: ``prompt_tokens + max_tokens`` above the model's context window (known models only). With
  ``on_too_long: reject`` such rows are excluded before sampling and each goes to ``on_reject`` (stage
  ``plan``, reason ``too_long``); with ``fail`` the plan fails (PlanError) if a chosen row is too long.
* **Prompt tokens** are counted with :func:`tracegen.planning.tokens.count_chat_tokens` on ``Record.messages()`` in
  the teacher's encoding: what the API bills for the prompt.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..config import RunConfig
from ..errors import ConfigError, PlanError, RunDirError
from ..records import SUBMIXES, Record
from ..rundir import RunPaths, read_plan, write_files_atomically
from .decontaminate import decontamination_parameters
from .mix import mix_shares
from .params import chat_body
from .plan_lines import plan_line, request_line_maker
from .plan_pass import REJECTIONS_PER_REASON as REJECTIONS_PER_REASON
from .plan_pass import _read_once, _setup
from .plan_select import _candidate_thresholds, _choose_and_spill, _estimate
from .plan_select import _submix_quotas as _submix_quotas
from .plan_spill import _PLAN_COLUMNS, _plan_record, _Store
from .plan_stats import DROP_REASONS as DROP_REASONS
from .plan_stats import PlanStats, label_order, shortfall_message
from .sources import RejectCallback
from .templates import MCDetector
from .tokens import encoding_for_model, model_info

__all__ = [
    "PLAN_FORMAT",
    "Plan",
    "PlanStats",
    "build_plan",
    "iter_plan",
    "plan_parameters",
    "request_body",
    "shortfall_message",
    "write_plan",
]

log = logging.getLogger(__name__)

#: Bumped when the same parameters would give a different plan.
PLAN_FORMAT = 2


# ---- the plan --------------------------------------------------------------------------------------------
class Plan:
    """Planned Records in plan order, held in memory or streamed from a temporary spill file; ``.stats``
    summarises them.

    Iterate it as often as needed. The spill file is removed by :meth:`close` (or when the Plan is garbage
    collected); use it as a context manager to be explicit.
    """

    def __init__(self, config: RunConfig, stats: PlanStats, store: _Store, spill_dir: Path) -> None:
        self.config = config
        self.stats = stats
        self._store = store
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(spill_dir), True)

    def __len__(self) -> int:
        return self.stats.planned_total

    def _columns(self) -> Iterator[tuple[int, str, tuple[Any, ...]]]:
        """(plan position, system-message label, the plan columns' values), in plan order."""
        if not self._finalizer.alive:
            raise PlanError("this plan was closed; build it again")
        for pos, label, *values in self._store.plan_rows():
            yield pos, label, tuple(values)

    def records(self) -> Iterator[tuple[int, str, Record]]:
        """(plan position, system-message label, Record), in plan order."""
        for pos, label, values in self._columns():
            yield pos, label, _plan_record(values)

    def rows(self) -> Iterator[tuple[int, str, str]]:
        """(plan position, system-message label, ``Record.to_dict()`` JSON text), in plan order."""
        for pos, label, values in self._columns():
            yield pos, label, plan_line(values)

    def lines(self) -> Iterator[str]:
        """``Record.to_dict()`` JSON text of each planned Record, in plan order (no trailing newline)."""
        for _pos, _label, text in self.rows():
            yield text

    def __iter__(self) -> Iterator[Record]:
        for _pos, _label, record in self.records():
            yield record

    def close(self) -> None:
        """Remove the spill file."""
        self._finalizer()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_plan(
    config: RunConfig,
    *,
    on_reject: RejectCallback | None = None,
    mc_detector: MCDetector | None = None,
    dedup_questions: bool = False,
    spill_dir: str | Path | None = None,
) -> Plan:
    """Plan ``config.n`` requests over ``config.source`` by the Orca rules (see the module docstring).

    ``on_reject`` receives each rejected row (bad source records when ``skip_bad_records`` is set, and
    ``too_long`` rows) as a :class:`~tracegen.planning.sources.Rejection`, e.g. to append to ``rejected.jsonl``.
    ``mc_detector`` replaces the built-in multiple-choice detector named by ``config.mc_detector``.
    ``dedup_questions``: drop a repeated question whatever its system message (default: only repeated
    (system message, question) pairs); keys are the clean step's (see the module docstring).
    ``spill_dir`` is where the temporary spill file goes (default: the system temp directory).
    """
    setup = _setup(config, mc_detector, dedup_questions)
    setup.source.check()
    shares = mix_shares(config.mix)
    stats = PlanStats(
        n_requested=config.n,
        seed=config.seed,
        mix={s: float(shares[s]) for s in SUBMIXES},
        encoding=setup.encoding,
        dedup="question" if dedup_questions else "pair",
        fill_shortfall=config.fill_shortfall,
    )
    if setup.decontaminator is not None:
        stats.decontaminated = dict.fromkeys(setup.decontaminator.sets, 0)

    thresholds = _candidate_thresholds(config, shares, _estimate(setup, stats))
    spill = Path(tempfile.mkdtemp(prefix="tracegen-plan-", dir=spill_dir))
    try:
        store = _Store(spill / "plan.sqlite")
        try:
            task_ids, key_arr, task_arr = _read_once(setup, stats, thresholds, store, on_reject)
            _choose_and_spill(setup, stats, shares, task_ids, key_arr, task_arr, store, on_reject)
        finally:
            store.close()
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    return Plan(config, stats, store, spill)


# ---- run directory files ---------------------------------------------------------------------------------
def request_body(record: Record, config: RunConfig) -> dict[str, Any]:
    """The chat-completions body for ``record`` (chat or reasoning model: see :mod:`tracegen.planning.params`)."""
    return chat_body(record.messages(), config)


def write_plan(plan: Plan, run_dir: str | Path, *, shard: tuple[int, int] | None = None) -> PlanStats:
    """Write ``plan.jsonl``, ``requests.jsonl`` (Batch API lines) and ``plan_stats.json`` atomically.

    ``shard=(k, n)`` (k 0-based) writes only plan positions ``p`` with ``p % n == k``: every shard is an
    evenly spread slice of the plan, so shards that all stop early together still form about a prefix of
    it. The returned stats then count this shard (planned*, prompt_tokens*, ``shard``); source-level
    numbers (eligible, quota, shortfall, dropped) stay those of the whole plan.
    """
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ConfigError(f"shard {shard[0] + 1}/{shard[1]} is not K/N with 1 <= K <= N")
    run = Path(run_dir)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{run}: cannot create the run directory ({e.strerror})") from None
    stats = PlanStats.from_dict(plan.stats.to_dict())
    planned = dict.fromkeys(SUBMIXES, 0)
    tokens = dict.fromkeys(SUBMIXES, 0)
    per_message: dict[str, int] = {}

    request = request_line_maker(functools.partial(chat_body, config=plan.config))
    at = {name: i for i, name in enumerate(_PLAN_COLUMNS)}
    i_id, i_submix, i_system, i_question, i_tokens = (
        at[name] for name in ("id", "submix", "system_prompt", "question", "prompt_tokens")
    )

    def write_lines(files: list[IO[str]]) -> None:
        plan_file, requests_file = files
        for pos, label, values in plan._columns():
            if shard is not None and pos % shard[1] != shard[0]:
                continue
            plan_file.write(plan_line(values) + "\n")
            requests_file.write(request(values[i_id], values[i_system], values[i_question]) + "\n")
            planned[values[i_submix]] += 1
            tokens[values[i_submix]] += values[i_tokens]
            per_message[label] = per_message.get(label, 0) + 1

    write_files_atomically([RunPaths(run).plan, RunPaths(run).requests], write_lines)
    if shard is not None:
        stats.shard = f"{shard[0] + 1}/{shard[1]}"
        stats.planned = planned
        stats.planned_total = sum(planned.values())
        stats.planned_per_system_message = {k: per_message[k] for k in sorted(per_message, key=label_order)}
        stats.prompt_tokens_per_submix = tokens
        stats.prompt_tokens = sum(tokens.values())

    def write_stats(files: list[IO[str]]) -> None:
        json.dump(stats.to_dict(), files[0], indent=2, ensure_ascii=False)
        files[0].write("\n")

    write_files_atomically([RunPaths(run).plan_stats], write_stats)
    return stats


def iter_plan(run_dir: str | Path) -> Iterator[Record]:
    """Stream the Records of ``run_dir/plan.jsonl`` in plan order."""
    return read_plan(Path(run_dir))


def plan_parameters(config: RunConfig, *, dedup_questions: bool = False) -> dict[str, Any]:
    """The config values that decide the plan; a run dir planned with other values holds another plan."""
    templates_sha256 = None
    if config.templates:
        try:
            templates_sha256 = hashlib.sha256(Path(config.templates).read_bytes()).hexdigest()
        except OSError as e:
            raise ConfigError(f"{config.templates}: cannot read template set ({e.strerror})") from None
    info = model_info(config.model, config.price_file)
    mix: str | dict[str, float] = (
        config.mix if isinstance(config.mix, str) else {k: config.mix[k] for k in sorted(config.mix)}
    )
    params = {
        "plan_format": PLAN_FORMAT,
        "source": list(config.source) or ["flan-v2"],
        "n": config.n,
        "seed": config.seed,
        "mix": mix,
        "niv_max_per_task": config.niv_max_per_task,
        "templates_sha256": templates_sha256,
        "system_message_spelling": config.system_message_spelling,
        "mc_detector": config.mc_detector,
        "dedup": "question" if dedup_questions else "pair",
        "fill_shortfall": config.fill_shortfall,
        "encoding": encoding_for_model(config.model, config.price_file),
        "context_window": info.context_window if info else None,
        "max_tokens": config.max_tokens,
        "on_too_long": config.on_too_long,
        "shard": config.shard,
    }
    if config.decontaminate:  # only when set, so existing run directories keep their fingerprint
        params["decontaminate"] = decontamination_parameters(config)
    return params
