"""Build the plan: which (system message, FLAN prompt) pairs the teacher is asked, in which order.

:func:`build_plan` reads the source **once** and never holds it in memory:

0. **Task sizes, cheaply.** :meth:`tracegen.planning.sources.Source.iter_task_keys` gives each row's (submix, task,
   template): only the metadata columns of Parquet data are read (a few bytes per row), other formats
   are read whole. The sampling rules run on these sizes to learn how many rows each task will give;
   each task keeps as **candidates** the rows whose rank (a seeded hash of the row's id) falls in its
   lowest ~1.1x-expected-picks-plus-slack fraction.
1. **The pass** classifies every row (bad / Dialog / few-shot / Big-Bench / too long, see
   :mod:`tracegen.planning.mix`), chooses its system message (:mod:`tracegen.planning.templates`), keeps an 8-byte hash of
   what would be sent and a 4-byte task number per eligible row, and spills the candidates to a temporary
   SQLite file. Duplicates are then found from the hashes (first occurrence in source order is kept), the
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

import contextlib
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
import weakref
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, PlanError, RunDirError, SourceError
from ..records import SUBMIXES, Record, pair_hash, text_hash
from ..rundir import RunPaths, read_plan, write_files_atomically
from .decontaminate import Decontaminator, decontamination_parameters
from .mix import interleave, is_bigbench, is_zero_shot, mix_shares, quotas, select_submix
from .params import chat_body
from .sources import RejectCallback, Rejection, Source, SourceRow, SourceStats
from .templates import Choice, MCDetector, SystemMessageChooser, get_mc_detector, load_template_set
from .tokens import count_chat_tokens, encoding_for_model, model_info

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
_CHAT_OVERHEAD_BOUND = 3 + 2 * (3 + 1)  # reply priming + two messages (3 each + a 1-token role)
_SPILL_BATCH = 1000
DROP_REASONS = ("bad_record", "dialog", "fewshot", "bigbench", "too_long", "duplicate", "contaminated")


# ---- stats -----------------------------------------------------------------------------------------------
@dataclass
class PlanStats:
    """What the plan holds and what was left out, JSON-able (``plan_stats.json``)."""

    n_requested: int
    seed: int
    mix: dict[str, float]
    """Normalised shares used (cot, niv, flan, t0)."""
    encoding: str
    dedup: str
    """``pair`` (system message + question) or ``question``."""
    rows_read: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    """Tasks with eligible rows, per submix."""
    eligible: dict[str, int] = field(default_factory=dict)
    """Rows per submix left after every drop (what quotas draw from)."""
    quota: dict[str, int] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    """quota - planned, per submix (redistributed only with fill_shortfall)."""
    absent: list[str] = field(default_factory=list)
    """Submixes with a share but no eligible row in the source: left out, the other shares renormalised."""
    planned_total: int = 0
    planned_per_system_message: dict[str, int] = field(default_factory=dict)
    """Orca id ("7") or ``template:<name>`` -> planned rows."""
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    niv_tasks_capped: int = 0
    """NIv2 tasks that had more eligible rows than niv_max_per_task."""
    prompt_tokens: int = 0
    prompt_tokens_per_submix: dict[str, int] = field(default_factory=dict)
    shard: str | None = None
    """``K/N`` when this is one shard of the plan (see :func:`write_plan`)."""
    decontaminated: dict[str, int] = field(default_factory=dict)
    """Evaluation set -> source rows dropped for overlapping it (``--decontaminate``)."""
    fill_shortfall: bool = False
    """Whether a short submix's missing rows went to the others (``redistributed``)."""
    redistributed: dict[str, int] = field(default_factory=dict)
    """Quota moved by fill_shortfall: + rows a submix received, - rows it could not fill."""
    source_passes: int = 1
    """Full reads of the source: 1, or 2 when some task's sampled candidates fell short after dedup."""
    task_sizes_read: str = ""
    """How the per-task sizes were read first: ``columns`` (Parquet metadata columns only) and/or ``rows``."""
    candidates: int = 0
    """Rows kept aside during the pass (about 1.1x the plan plus a few per task)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanStats:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


# ---- the plan --------------------------------------------------------------------------------------------
class Plan:
    """Planned Records in plan order, streamed from a temporary spill file; ``.stats`` summarises them.

    Iterate it as often as needed. The spill file is removed by :meth:`close` (or when the Plan is garbage
    collected); use it as a context manager to be explicit.
    """

    def __init__(self, config: RunConfig, stats: PlanStats, db_path: Path, spill_dir: Path) -> None:
        self.config = config
        self.stats = stats
        self._db_path = db_path
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(spill_dir), True)

    def __len__(self) -> int:
        return self.stats.planned_total

    def rows(self) -> Iterator[tuple[int, str, str]]:
        """(plan position, system-message label, ``Record.to_dict()`` JSON text), in plan order."""
        if not self._finalizer.alive:
            raise PlanError("this plan was closed; build it again")
        con = sqlite3.connect(self._db_path)
        try:
            yield from con.execute("SELECT pos, label, record FROM plan ORDER BY pos")
        finally:
            con.close()

    def lines(self) -> Iterator[str]:
        """``Record.to_dict()`` JSON text of each planned Record, in plan order (no trailing newline)."""
        for _pos, _label, text in self.rows():
            yield text

    def __iter__(self) -> Iterator[Record]:
        for text in self.lines():
            yield Record.from_dict(json.loads(text))

    def close(self) -> None:
        """Remove the spill file."""
        self._finalizer()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- helpers ---------------------------------------------------------------------------------------------
def _hash64(*parts: str) -> int:
    data = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _dedup_key(choice: Choice, row: SourceRow, by_question: bool) -> int:
    if by_question:
        return text_hash(row.question)  # the clean step's exact_question key
    return pair_hash(choice.system_prompt, row.question)  # the clean step's exact_pair key


def _messages(system_prompt: str, question: str) -> list[dict[str, str]]:
    return Record(id="", submix="", question=question, system_prompt=system_prompt, key="-").messages()


def _prompt_tokens_if_too_long(choice: Choice, row: SourceRow, encoding: str, limit: int) -> int | None:
    """Exact prompt tokens when over ``limit``, else None (cheap byte bound first: a token is >= 1 byte)."""
    upper = len(choice.system_prompt.encode()) + len(row.question.encode()) + _CHAT_OVERHEAD_BOUND
    if upper <= limit:
        return None
    tokens = count_chat_tokens(_messages(choice.system_prompt, row.question), encoding)
    return tokens if tokens > limit else None


def _record(row: SourceRow, index: int, choice: Choice) -> Record:
    return Record(
        id=f"{row.submix}.{index}",
        submix=row.submix,
        question=row.question,
        system_prompt=choice.system_prompt,
        system_message_id=choice.system_message_id,
        train_system_prompt=choice.train_system_prompt,
        task_name=row.task_name,
        template_type=row.template_type,
        target=row.target,
        source=row.where,
    )


def _label_order(label: str) -> tuple[int, int, str]:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


@dataclass
class _Setup:
    config: RunConfig
    source: Source
    chooser: SystemMessageChooser
    encoding: str
    limit: int | None
    """Largest prompt that fits (context window - max_tokens), None when the model is unknown."""
    context_window: int | None
    reject_too_long: bool
    dedup_questions: bool
    decontaminator: Decontaminator | None = None


@dataclass
class _Classified:
    """A row that reached the eligibility stage."""

    row: SourceRow
    index: int
    choice: Choice
    key: int


def _walk(
    setup: _Setup,
    rows: Iterable[SourceRow],
    stats: PlanStats | None,
    on_reject: RejectCallback | None,
) -> Iterator[_Classified]:
    """Classify rows identically in both passes; count drops into ``stats`` (pass 1 only)."""
    next_index = dict.fromkeys(SUBMIXES, 0)
    for row in rows:
        index = next_index[row.submix]
        next_index[row.submix] = index + 1
        if not is_zero_shot(row.template_type):
            if stats is not None:
                stats.dropped["fewshot"] += 1
                if on_reject is not None and stats.dropped["fewshot"] <= REJECTIONS_PER_REASON:
                    detail = f"template {row.template_type}: Orca takes zero-shot templates only"
                    on_reject(_drop_rejection(row, "fewshot", detail))
            continue
        if row.submix == "t0" and is_bigbench(row.task_name):
            if stats is not None:
                stats.dropped["bigbench"] += 1
                if on_reject is not None and stats.dropped["bigbench"] <= REJECTIONS_PER_REASON:
                    on_reject(_drop_rejection(row, "bigbench", "Big-Bench task in T0: Orca leaves them out"))
            continue
        choice = setup.chooser.choose(row, index)
        if setup.decontaminator is not None and _contaminated(
            setup.decontaminator, row, index, choice, stats, on_reject
        ):
            continue
        if setup.reject_too_long and setup.limit is not None:
            tokens = _prompt_tokens_if_too_long(choice, row, setup.encoding, setup.limit)
            if tokens is not None:
                if stats is not None:
                    stats.dropped["too_long"] += 1
                    if on_reject is not None:
                        on_reject(_too_long_rejection(setup, _record(row, index, choice), tokens))
                continue
        yield _Classified(row, index, choice, _dedup_key(choice, row, setup.dedup_questions))


def _contaminated(
    dec: Decontaminator,
    row: SourceRow,
    index: int,
    choice: Choice,
    stats: PlanStats | None,
    on_reject: RejectCallback | None,
) -> bool:
    """Whether ``row`` overlaps an evaluation set; pass 1 counts it and sends it to ``on_reject``."""
    hit = dec.match(row.question)
    if hit is None:
        return False
    if stats is not None:
        stats.dropped["contaminated"] += 1
        stats.decontaminated[hit.eval_set] = stats.decontaminated.get(hit.eval_set, 0) + 1
        if on_reject is not None:
            record = _record(row, index, choice).to_dict()
            record["eval_set"], record["eval_item"] = hit.eval_set, hit.item
            on_reject(
                Rejection(
                    id=record["id"], stage="plan", reason="contaminated", detail=hit.detail(), record=record
                )
            )
    return True


#: rejected.jsonl gets at most this many lines per plan-stage drop reason (plan_stats.json counts them all).
REJECTIONS_PER_REASON = 1000


def _drop_rejection(row: SourceRow, reason: str, detail: str) -> Rejection:
    """A rejected.jsonl line for a source row the plan leaves out (few-shot, Big-Bench, duplicate)."""
    record = {
        "question": row.question,
        "target": row.target,
        "submix": row.submix,
        "task_name": row.task_name,
        "template_type": row.template_type,
    }
    return Rejection(id=row.where, stage="plan", reason=reason, detail=detail, record=record)


def _too_long_rejection(setup: _Setup, record: Record, tokens: int) -> Rejection:
    record.prompt_tokens = tokens
    return Rejection(
        id=record.id,
        stage="plan",
        reason="too_long",
        detail=_too_long_detail(setup, tokens),
        record=record.to_dict(),
    )


def _too_long_detail(setup: _Setup, tokens: int) -> str:
    return (
        f"{tokens} prompt tokens + max_tokens {setup.config.max_tokens} exceed the "
        f"{setup.context_window}-token context window of {setup.config.model}"
    )


def _setup(config: RunConfig, mc_detector: MCDetector | None, dedup_questions: bool) -> _Setup:
    template_set = load_template_set(config.templates) if config.templates else None
    detector = mc_detector if mc_detector is not None else get_mc_detector(config.mc_detector)
    chooser = SystemMessageChooser(
        seed=config.seed,
        spelling=config.system_message_spelling,
        mc_detector=detector,
        template_set=template_set,
    )
    info = model_info(config.model, config.price_file)
    limit = None
    if info is not None:
        limit = info.context_window - config.max_tokens
        if limit <= _CHAT_OVERHEAD_BOUND:
            raise ConfigError(
                f"max_tokens {config.max_tokens} leaves no room for a prompt in the "
                f"{info.context_window}-token context window of {config.model}; lower --max-tokens"
            )
    source = Source(list(config.source), skip_bad_records=config.skip_bad_records)
    return _Setup(
        config=config,
        source=source,
        chooser=chooser,
        encoding=encoding_for_model(config.model, config.price_file),
        limit=limit,
        context_window=info.context_window if info else None,
        reject_too_long=config.on_too_long == "reject",
        dedup_questions=dedup_questions,
        decontaminator=Decontaminator.from_specs(
            config.decontaminate,
            ngram=config.decontaminate_ngram,
            min_matches=config.decontaminate_min_matches,
        )
        if config.decontaminate
        else None,
    )


# ---- build -----------------------------------------------------------------------------------------------
_RANK_SPACE = 1 << 63
"""Ranks are 63-bit (SQLite integers are signed)."""


def _rank(seed: int, submix: str, index: int) -> int:
    """The row's place in its task's random order: a hash of (seed, submix, index), stable across runs."""
    return _hash64(str(seed), "rank", submix, str(index)) >> 1


def _submix_quotas(
    n: int, shares: dict[str, Any], eligible: dict[str, int], fill_shortfall: bool
) -> dict[str, int]:
    """Quotas by the mix; with ``fill_shortfall`` a short submix's missing rows go to the others by share."""
    q = quotas(n, shares)
    if not fill_shortfall:
        return q
    capped: dict[str, int] = {}
    while True:
        over = [s for s in SUBMIXES if s not in capped and q[s] > eligible.get(s, 0)]
        if not over:
            return q
        for s in over:
            capped[s] = eligible.get(s, 0)
        free = {s: shares.get(s, 0) for s in SUBMIXES if s not in capped and shares.get(s, 0) > 0}
        total = sum(free.values())
        rest = quotas(n - sum(capped.values()), {s: v / total for s, v in free.items()}) if total else {}
        q = {s: capped[s] if s in capped else rest.get(s, 0) for s in SUBMIXES}


def _estimate(setup: _Setup, stats: PlanStats) -> dict[tuple[str, str], int]:
    """Zero-shot, non-Big-Bench rows per (submix, task), before dedup: read cheaply (see Source)."""
    counts: dict[tuple[str, str], int] = {}
    for submix, task, template in setup.source.iter_task_keys():
        if is_zero_shot(template) and not (submix == "t0" and is_bigbench(task)):
            counts[(submix, task)] = counts.get((submix, task), 0) + 1
    kinds = {setup.source.column_read(i) for i in range(len(setup.source.parts))}
    stats.task_sizes_read = "+".join(
        k for k, on in (("columns", True in kinds), ("rows", False in kinds)) if on
    )
    return counts


def _candidate_thresholds(
    config: RunConfig, shares: dict[str, Any], estimate: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """Rank below which a task's rows are kept as candidates: about 1.1x its expected picks, plus slack.

    The expected picks come from the same sampling rules run on the estimated sizes; a task whose
    candidates fall short after dedup costs a second pass (counted in ``source_passes``), never a
    different plan: the plan takes each task's lowest-ranked eligible rows whatever the candidates were.
    """
    per_submix: dict[str, list[tuple[str, str]]] = {s: [] for s in SUBMIXES}
    for key in estimate:
        per_submix[key[0]].append(key)
    totals = {s: sum(estimate[k] for k in per_submix[s]) for s in SUBMIXES}
    present = {s: shares.get(s, 0) if totals[s] else 0 for s in SUBMIXES}
    if sum(present.values()) == 0:
        return {}
    norm = {s: v / sum(present.values()) for s, v in present.items()}
    totals["niv"] = sum(min(estimate[k], config.niv_max_per_task) for k in per_submix["niv"])
    q = _submix_quotas(config.n, norm, totals, config.fill_shortfall)
    out: dict[tuple[str, str], int] = {}
    for s in SUBMIXES:
        keys = per_submix[s]
        sizes = [estimate[k] for k in keys]
        sel = select_submix(s, sizes, q[s], seed=config.seed, niv_max_per_task=config.niv_max_per_task)
        picks = np.bincount(sel.task, minlength=len(keys)) if len(keys) else np.zeros(0, dtype=np.int64)
        for key, size, k in zip(keys, sizes, picks.tolist(), strict=True):
            cap = 1.1 * k + 4 * k**0.5 + 8
            out[key] = _RANK_SPACE if cap >= size else int(_RANK_SPACE * cap / size)
    return out


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
        db_path = spill / "plan.sqlite"
        con = sqlite3.connect(db_path)
        try:
            _prepare_db(con)
            task_ids, key_arr, task_arr = _read_once(setup, stats, thresholds, con, on_reject)
            _choose_and_spill(setup, stats, shares, task_ids, key_arr, task_arr, con, on_reject)
        finally:
            con.close()
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    return Plan(config, stats, db_path, spill)


def _prepare_db(con: sqlite3.Connection) -> None:
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-32768")  # 32 MiB of pages: inserts and the index build read less back
    con.execute(
        "CREATE TABLE cand (seq INTEGER PRIMARY KEY, tid INTEGER NOT NULL, rank INTEGER NOT NULL, "
        "label TEXT NOT NULL, submix TEXT, idx INTEGER, question TEXT, target TEXT, task_name TEXT, "
        "template_type TEXT, source TEXT, message_id INTEGER, system_prompt TEXT, train_system_prompt TEXT)"
    )
    con.execute("CREATE TABLE plan (pos INTEGER PRIMARY KEY, label TEXT NOT NULL, record TEXT NOT NULL)")


_CandRow = tuple[int, int, int, str, str, int, str, str, str, str, str, "int | None", str, "str | None"]
_INSERT_CAND = "INSERT OR IGNORE INTO cand VALUES (" + ", ".join("?" * 14) + ")"


def _cand_row(item: _Classified, seq: int, tid: int, rank: int) -> _CandRow:
    """A candidate as plain columns (a Record is built only for the rows the plan takes)."""
    row, choice = item.row, item.choice
    return (
        seq,
        tid,
        rank,
        choice.label,
        row.submix,
        item.index,
        row.question,
        row.target,
        row.task_name,
        row.template_type,
        row.where,
        choice.system_message_id,
        choice.system_prompt,
        choice.train_system_prompt,
    )


def _cand_record(values: tuple[Any, ...]) -> Record:
    (submix, idx, question, target, task_name, template_type, source, message_id, system, train) = values
    return Record(
        id=f"{submix}.{idx}",
        submix=submix,
        question=question,
        system_prompt=system,
        system_message_id=message_id,
        train_system_prompt=train,
        task_name=task_name,
        template_type=template_type,
        target=target,
        source=source,
    )


def _read_once(
    setup: _Setup,
    stats: PlanStats,
    thresholds: dict[tuple[str, str], int],
    con: sqlite3.Connection,
    on_reject: RejectCallback | None,
) -> tuple[dict[tuple[str, str], int], Any, Any]:
    """The one full pass: per eligible row a hash and a task number; candidate rows spilled to SQLite."""
    task_ids: dict[tuple[str, str], int] = {}
    keys = array("Q")
    tasks = array("i")
    source_stats = SourceStats()
    batch: list[_CandRow] = []
    seed = setup.config.seed
    for item in _walk(setup, setup.source.iter_rows(on_reject, source_stats), stats, on_reject):
        task = (item.row.submix, item.row.task_name)
        tid = task_ids.setdefault(task, len(task_ids))
        seq = len(keys)
        keys.append(item.key)
        tasks.append(tid)
        rank = _rank(seed, item.row.submix, item.index)
        if rank < thresholds.get(task, _RANK_SPACE):
            batch.append(_cand_row(item, seq, tid, rank))
            if len(batch) >= _SPILL_BATCH:
                con.executemany(_INSERT_CAND, batch)
                stats.candidates += len(batch)
                batch.clear()
    con.executemany(_INSERT_CAND, batch)
    stats.candidates += len(batch)
    con.execute("CREATE INDEX cand_task ON cand (tid, rank)")
    stats.source_passes = 1
    stats.rows_read = source_stats.rows_read
    stats.dropped["bad_record"] = source_stats.bad_records
    stats.dropped["dialog"] = source_stats.dialog_skipped
    key_arr = np.frombuffer(keys, dtype=np.uint64).copy() if keys else np.zeros(0, dtype=np.uint64)
    task_arr = np.frombuffer(tasks, dtype=np.int32).copy() if tasks else np.zeros(0, dtype=np.int32)
    return task_ids, key_arr, task_arr


def _choose_and_spill(
    setup: _Setup,
    stats: PlanStats,
    shares: dict[str, Any],
    task_ids: dict[tuple[str, str], int],
    key_arr: Any,
    task_arr: Any,
    con: sqlite3.Connection,
    on_reject: RejectCallback | None = None,
) -> None:
    """Dedup, sample per submix, interleave; then fill the plan table from each task's lowest ranks."""
    config = setup.config
    n_rows, n_tasks = len(key_arr), len(task_ids)
    keep = np.zeros(n_rows, dtype=bool)
    if n_rows:
        keep[np.unique(key_arr, return_index=True)[1]] = True
    stats.dropped["duplicate"] = int(n_rows - keep.sum())
    if on_reject is not None and stats.dropped["duplicate"]:
        _reject_duplicates(con, np.flatnonzero(~keep), on_reject)
    counts = np.bincount(task_arr[keep], minlength=n_tasks)

    submix_tids: dict[str, list[int]] = {s: [] for s in SUBMIXES}
    for (submix, _name), tid in task_ids.items():
        if counts[tid] > 0:
            submix_tids[submix].append(tid)
    stats.tasks = {s: len(submix_tids[s]) for s in SUBMIXES}
    stats.eligible = {s: int(sum(counts[t] for t in submix_tids[s])) for s in SUBMIXES}
    stats.niv_tasks_capped = sum(1 for t in submix_tids["niv"] if counts[t] > config.niv_max_per_task)
    # A submix the source does not hold at all is left out of the mix and the others' shares renormalised,
    # so a CoT-only (or NIv2-only, ...) source still plans --n rows; a submix that is present but short
    # keeps its quota and reports the shortfall (unless fill_shortfall gives it to the others).
    stats.absent = [s for s in SUBMIXES if shares.get(s, 0) > 0 and stats.eligible[s] == 0]
    if stats.absent and len(stats.absent) < sum(1 for s in SUBMIXES if shares.get(s, 0) > 0):
        present_total = sum(shares[s] for s in SUBMIXES if s not in stats.absent)
        shares = {s: (0 if s in stats.absent else shares.get(s, 0) / present_total) for s in SUBMIXES}
        stats.mix = {s: float(shares[s]) for s in SUBMIXES}
    by_mix = quotas(config.n, shares)
    capacity = dict(stats.eligible)  # what each submix can give: NIv2 after its per-task cap
    capacity["niv"] = sum(min(int(counts[t]), config.niv_max_per_task) for t in submix_tids["niv"])
    stats.quota = _submix_quotas(config.n, shares, capacity, config.fill_shortfall)
    stats.redistributed = {s: stats.quota[s] - by_mix[s] for s in SUBMIXES if stats.quota[s] != by_mix[s]}

    sequences: dict[str, Any] = {}
    for s in SUBMIXES:
        tids = np.asarray(submix_tids[s], dtype=np.int64)
        sel = select_submix(
            s,
            [int(counts[t]) for t in submix_tids[s]],
            stats.quota[s],
            seed=config.seed,
            niv_max_per_task=config.niv_max_per_task,
        )
        sequences[s] = tids[sel.task] if len(sel) else np.zeros(0, dtype=np.int64)
    stats.planned = {s: len(sequences[s]) for s in SUBMIXES}
    stats.shortfall = {s: stats.quota[s] - stats.planned[s] for s in SUBMIXES}
    stats.planned_total = sum(stats.planned.values())
    if stats.planned_total == 0:
        raise PlanError(
            f"no eligible rows: read {stats.rows_read} rows, dropped "
            + ", ".join(f"{v} {k}" for k, v in stats.dropped.items() if v)
            + " (the plan needs zero-shot zs_opt/zs_noopt rows of CoT, NIv2, Flan2021 or T0)"
        )

    # plan position of the j-th pick of each task
    order = interleave([stats.planned[s] for s in SUBMIXES])
    picks: dict[int, Any] = {}
    for i, s in enumerate(SUBMIXES):
        seq_s, pos_s = sequences[s], np.flatnonzero(order == i)
        grouped = np.argsort(seq_s, kind="stable")
        bounds = np.flatnonzero(np.diff(seq_s[grouped])) + 1
        for part in np.split(grouped, bounds) if len(grouped) else []:
            picks[int(seq_s[part[0]])] = pos_s[part]
    chosen = {tid: _lowest_ranked(con, tid, len(pos), keep) for tid, pos in picks.items()}
    short = {tid for tid, rows in chosen.items() if len(rows) < len(picks[tid])}
    if short:
        _second_pass(setup, stats, key_arr, task_arr, keep, short, con)
        chosen.update({tid: _lowest_ranked(con, tid, len(picks[tid]), keep) for tid in short})
        if any(len(chosen[tid]) < len(picks[tid]) for tid in short):
            raise SourceError(
                "the source changed while planning (rows of the first pass are missing on the second); "
                "plan from a local copy of the data"
            )
    _spill_plan(setup, stats, con, chosen, picks)


def _lowest_ranked(con: sqlite3.Connection, tid: int, k: int, keep: Any) -> list[int]:
    """The ``k`` lowest-ranked candidates of task ``tid`` that dedup kept (fewer if it has fewer)."""
    out: list[int] = []
    for (seq,) in con.execute("SELECT seq FROM cand WHERE tid = ? ORDER BY rank", (tid,)):
        if keep[seq]:
            out.append(seq)
            if len(out) == k:
                break
    return out


def _second_pass(
    setup: _Setup,
    stats: PlanStats,
    key_arr: Any,
    task_arr: Any,
    keep: Any,
    short: set[int],
    con: sqlite3.Connection,
) -> None:
    """Read the source again for the tasks whose candidates fell short: spill every kept row of them."""
    stats.source_passes = 2
    seed, batch = setup.config.seed, []
    rows = setup.source.iter_rows(None, SourceStats())
    with contextlib.closing(rows):
        for seq, item in enumerate(_walk(setup, rows, None, None)):
            if seq >= len(key_arr) or int(key_arr[seq]) != item.key:
                raise SourceError(
                    f"the source changed while planning (row {item.row.where} differs from the first "
                    "pass); plan from a local copy of the data"
                )
            tid = int(task_arr[seq])
            if tid in short and keep[seq]:
                batch.append(_cand_row(item, seq, tid, _rank(seed, item.row.submix, item.index)))
    con.executemany(_INSERT_CAND, batch)


def _spill_plan(
    setup: _Setup,
    stats: PlanStats,
    con: sqlite3.Connection,
    chosen: dict[int, list[int]],
    picks: dict[int, Any],
) -> None:
    """Count the prompt tokens of the chosen rows and write them to the plan table by position."""
    per_message: dict[str, int] = {}
    tokens_per_submix = dict.fromkeys(SUBMIXES, 0)
    batch: list[tuple[int, str, str]] = []
    where: dict[int, int] = {}
    for tid, seqs in chosen.items():
        where.update(zip(seqs, picks[tid].tolist(), strict=True))
    # one sequential scan of the candidates (about 1.1x the plan) rather than a lookup per task
    for seq, label, *values in _scan(con):
        pos = where.get(seq)
        if pos is None:
            continue
        record = _cand_record(tuple(values))
        record.prompt_tokens = count_chat_tokens(record.messages(), setup.encoding)
        if setup.limit is not None and record.prompt_tokens > setup.limit:
            raise PlanError(
                f"request {record.id} ({record.source}) is too long: "
                f"{_too_long_detail(setup, record.prompt_tokens)}; lower --max-tokens, choose a "
                "model with a larger context, or set on_too_long: reject"
            )
        per_message[label] = per_message.get(label, 0) + 1
        tokens_per_submix[record.submix] += record.prompt_tokens
        batch.append((pos, label, json.dumps(record.to_dict(), ensure_ascii=False)))
        if len(batch) >= _SPILL_BATCH:
            con.executemany("INSERT INTO plan VALUES (?, ?, ?)", batch)
            batch.clear()
    con.executemany("INSERT INTO plan VALUES (?, ?, ?)", batch)
    con.commit()
    stats.planned_per_system_message = {k: per_message[k] for k in sorted(per_message, key=_label_order)}
    stats.prompt_tokens_per_submix = tokens_per_submix
    stats.prompt_tokens = sum(tokens_per_submix.values())


def _scan(con: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    """Every candidate, in source order, read in chunks (the plan table is written meanwhile)."""
    last = -1
    while True:
        rows = con.execute(
            "SELECT seq, label, submix, idx, question, target, task_name, template_type, source, message_id, "
            "system_prompt, train_system_prompt FROM cand WHERE seq > ? ORDER BY seq LIMIT ?",
            (last, _SPILL_BATCH),
        ).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def shortfall_message(stats: PlanStats) -> str | None:
    """One line saying what the plan could not fill and why, or None when it holds ``n_requested`` rows."""
    short = {s: v for s, v in stats.shortfall.items() if v > 0}
    if not short and stats.planned_total >= stats.n_requested:
        return None
    parts = [
        f"{s} had {stats.eligible.get(s, 0):,} eligible rows for a quota of {stats.quota.get(s, 0):,}"
        for s in SUBMIXES
        if s in short
    ]
    line = f"planned {stats.planned_total:,} of --n {stats.n_requested:,} requests: " + "; ".join(parts)
    if stats.absent:
        line += f"; {', '.join(stats.absent)} absent from the source"
    if stats.fill_shortfall:
        return line + " (every submix is exhausted: the source holds no more eligible rows)"
    return line + "; --fill-shortfall gives the missing rows to the other submixes in proportion to the mix"


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

    def write_lines(files: list[IO[str]]) -> None:
        plan_file, requests_file = files
        for pos, label, text in plan.rows():
            if shard is not None and pos % shard[1] != shard[0]:
                continue
            plan_file.write(text + "\n")
            record = Record.from_dict(json.loads(text))
            line = {
                "custom_id": record.id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": request_body(record, plan.config),
            }
            requests_file.write(json.dumps(line, ensure_ascii=False) + "\n")
            planned[record.submix] += 1
            tokens[record.submix] += record.prompt_tokens
            per_message[label] = per_message.get(label, 0) + 1

    write_files_atomically([RunPaths(run).plan, RunPaths(run).requests], write_lines)
    if shard is not None:
        stats.shard = f"{shard[0] + 1}/{shard[1]}"
        stats.planned = planned
        stats.planned_total = sum(planned.values())
        stats.planned_per_system_message = {k: per_message[k] for k in sorted(per_message, key=_label_order)}
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


def _reject_duplicates(con: sqlite3.Connection, seqs: Any, on_reject: RejectCallback) -> None:
    """rejected.jsonl lines for duplicate rows the plan leaves out: those kept aside as candidates, at most
    :data:`REJECTIONS_PER_REASON` (one pass keeps no other copy of them; plan_stats.json counts them all)."""
    sent = 0
    for start in range(0, len(seqs), _SPILL_BATCH):
        chunk = [int(s) for s in seqs[start : start + _SPILL_BATCH]]
        rows = con.execute(
            "SELECT submix, idx, question, target, task_name, template_type, source FROM cand WHERE seq IN ("
            + ",".join("?" * len(chunk))
            + ") ORDER BY seq",
            chunk,
        ).fetchall()
        for submix, idx, question, target, task_name, template_type, source in rows:
            record = {
                "question": question,
                "target": target,
                "submix": submix,
                "task_name": task_name,
                "template_type": template_type,
            }
            detail = "an earlier row has the same (system, question)"
            on_reject(
                Rejection(
                    id=source or f"{submix}.{idx}",
                    stage="plan",
                    reason="duplicate",
                    detail=detail,
                    record=record,
                )
            )
            sent += 1
            if sent >= REJECTIONS_PER_REASON:
                return
