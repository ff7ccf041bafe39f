"""Build the plan: which (system message, FLAN prompt) pairs the teacher is asked, in which order.

:func:`build_plan` streams the source twice and never holds it in memory:

1. **Pass 1** classifies every row (bad / Dialog / few-shot / Big-Bench / too long, see :mod:`tracegen.mix`),
   chooses its system message (:mod:`tracegen.templates`) and keeps, per eligible row, only an 8-byte hash of
   what would be sent and a 4-byte task number. Duplicates are found from the hashes (first occurrence in
   source order is kept), then the Orca rules pick rows per submix from per-task counts and the submixes are
   interleaved (:func:`tracegen.mix.interleave`), which gives every chosen row its plan position.
2. **Pass 2** streams the source again, checks each eligible row against its pass-1 hash (a source that
   changed in between is an error), counts the prompt tokens of the chosen rows and spills them to a
   temporary SQLite file keyed by plan position; it stops as soon as every chosen row is found.

The :class:`Plan` then yields Records in plan order from that file. Memory: 12 bytes per eligible source
row while reading, about 50 at the peak of sampling (numpy arrays), plus a read buffer; the plan itself
lives on disk.

Decisions (documented for users):

* **ids** are OpenOrca-style ``{submix}.{n}``: ``n`` is the 0-based index of the row among all well-formed
  rows of that submix in source order (few-shot and Big-Bench rows included, bad and Dialog rows not), so an
  id names the same source row whatever ``n``, ``seed`` or mix is asked.
* **Duplicates**: a row whose (system message, question) pair was already seen earlier in the source is
  dropped before sampling, so it never costs anything and never takes a quota slot; counted in
  ``dropped["duplicate"]``. With ``dedup_questions=True`` the question alone (case-folded, whitespace
  collapsed) decides — off by default, because the same question under different system messages is a
  distinct Orca query. Hashes are 64-bit (a false duplicate among 5M rows has probability ~1e-6).
* **Too long**: ``prompt_tokens + max_tokens`` above the model's context window (known models only). With
  ``on_too_long: reject`` such rows are excluded before sampling and each goes to ``on_reject`` (stage
  ``plan``, reason ``too_long``); with ``fail`` the plan fails (PlanError) if a chosen row is too long.
* **Prompt tokens** are counted with :func:`tracegen.tokens.count_chat_tokens` on ``Record.messages()`` in
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

from ._fileio import write_files_atomically
from .config import RunConfig
from .decontaminate import Decontaminator, decontamination_parameters
from .errors import ConfigError, PlanError, RunDirError, SourceError
from .mix import interleave, is_bigbench, is_zero_shot, mix_shares, quotas, select_submix
from .params import chat_body
from .records import SUBMIXES, Record
from .sources import RejectCallback, Rejection, Source, SourceRow, SourceStats
from .templates import Choice, MCDetector, SystemMessageChooser, get_mc_detector, load_template_set
from .tokens import count_chat_tokens, encoding_for_model, model_info

__all__ = [
    "PLAN_FORMAT",
    "Plan",
    "PlanStats",
    "build_plan",
    "iter_plan",
    "plan_lines",
    "plan_parameters",
    "request_body",
    "write_plan",
]

log = logging.getLogger(__name__)

#: Bumped when the same parameters would give a different plan.
PLAN_FORMAT = 1
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
    """quota - planned, per submix (not redistributed)."""
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
        return _hash64("q", " ".join(row.question.casefold().split()))
    return _hash64(choice.system_prompt, row.question)


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
_DUPLICATE = -2  # a plan position meaning "dropped as a duplicate" (pass 2 writes its rejection)


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
    ``too_long`` rows) as a :class:`~tracegen.sources.Rejection`, e.g. to append to ``rejected.jsonl``.
    ``mc_detector`` replaces the built-in multiple-choice detector named by ``config.mc_detector``.
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
    )
    if setup.decontaminator is not None:
        stats.decontaminated = dict.fromkeys(setup.decontaminator.sets, 0)

    # pass 1: one hash and one task number per eligible row
    task_ids: dict[tuple[str, str], int] = {}
    keys = array("Q")
    tasks = array("i")
    source_stats = SourceStats()
    for item in _walk(setup, setup.source.iter_rows(on_reject, source_stats), stats, on_reject):
        tid = task_ids.setdefault((item.row.submix, item.row.task_name), len(task_ids))
        keys.append(item.key)
        tasks.append(tid)
    stats.rows_read = source_stats.rows_read
    stats.dropped["bad_record"] = source_stats.bad_records
    stats.dropped["dialog"] = source_stats.dialog_skipped

    positions, key_arr = _choose(config, stats, shares, task_ids, keys, tasks)
    del keys, tasks
    if stats.planned_total == 0:
        raise PlanError(
            f"no eligible rows: read {stats.rows_read} rows, dropped "
            + ", ".join(f"{v} {k}" for k, v in stats.dropped.items() if v)
            + " (the plan needs zero-shot zs_opt/zs_noopt rows of CoT, NIv2, Flan2021 or T0)"
        )

    spill = Path(tempfile.mkdtemp(prefix="tracegen-plan-", dir=spill_dir))
    try:
        db_path = spill / "plan.sqlite"
        _pass2(setup, stats, positions, key_arr, db_path, on_reject)
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    return Plan(config, stats, db_path, spill)


def _choose(
    config: RunConfig,
    stats: PlanStats,
    shares: dict[str, Any],
    task_ids: dict[tuple[str, str], int],
    keys: array[int],
    tasks: array[int],
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.uint64]]]:
    """Dedup, sample per submix and interleave: the plan position of each eligible row (-1 = not planned)."""
    key_arr = np.frombuffer(keys, dtype=np.uint64).copy() if keys else np.zeros(0, dtype=np.uint64)
    task_arr = np.frombuffer(tasks, dtype=np.int32).copy() if tasks else np.zeros(0, dtype=np.int32)
    n_rows, n_tasks = len(key_arr), len(task_ids)
    keep = np.zeros(n_rows, dtype=bool)
    if n_rows:
        keep[np.unique(key_arr, return_index=True)[1]] = True
    stats.dropped["duplicate"] = int(n_rows - keep.sum())
    duplicates = np.flatnonzero(~keep)[:REJECTIONS_PER_REASON]  # written to rejected.jsonl in pass 2
    counts = np.bincount(task_arr[keep], minlength=n_tasks)
    grouped = np.argsort(np.where(keep, task_arr, n_tasks), kind="stable")
    offsets = np.concatenate(([0], np.cumsum(counts)))
    del task_arr, keep

    submix_tids: dict[str, list[int]] = {s: [] for s in SUBMIXES}
    for (submix, _name), tid in task_ids.items():
        if counts[tid] > 0:
            submix_tids[submix].append(tid)
    stats.tasks = {s: len(submix_tids[s]) for s in SUBMIXES}
    stats.eligible = {s: int(sum(counts[t] for t in submix_tids[s])) for s in SUBMIXES}
    stats.niv_tasks_capped = sum(1 for t in submix_tids["niv"] if counts[t] > config.niv_max_per_task)
    # A submix the source does not hold at all is left out of the mix and the others' shares renormalised,
    # so a CoT-only (or NIv2-only, ...) source still plans --n rows; a submix that is present but short
    # keeps its quota and reports the shortfall.
    stats.absent = [s for s in SUBMIXES if shares.get(s, 0) > 0 and stats.eligible[s] == 0]
    if stats.absent and len(stats.absent) < sum(1 for s in SUBMIXES if shares.get(s, 0) > 0):
        present_total = sum(shares[s] for s in SUBMIXES if s not in stats.absent)
        shares = {s: (0 if s in stats.absent else shares.get(s, 0) / present_total) for s in SUBMIXES}
        stats.mix = {s: float(shares[s]) for s in SUBMIXES}
    stats.quota = quotas(config.n, shares)

    chosen: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {}
    for s in SUBMIXES:
        tids = np.asarray(submix_tids[s], dtype=np.int64)
        sel = select_submix(
            s,
            [int(counts[t]) for t in submix_tids[s]],
            stats.quota[s],
            seed=config.seed,
            niv_max_per_task=config.niv_max_per_task,
        )
        global_tid = tids[sel.task] if len(sel) else np.zeros(0, dtype=np.int64)
        chosen[s] = grouped[offsets[global_tid] + sel.local].astype(np.int64)
    stats.planned = {s: len(chosen[s]) for s in SUBMIXES}
    stats.shortfall = {s: stats.quota[s] - stats.planned[s] for s in SUBMIXES}
    stats.planned_total = sum(stats.planned.values())

    order = interleave([stats.planned[s] for s in SUBMIXES])
    positions = np.full(n_rows, -1, dtype=np.int64)
    for i, s in enumerate(SUBMIXES):
        positions[chosen[s]] = np.flatnonzero(order == i)
    positions[duplicates] = _DUPLICATE
    return positions, key_arr


def _pass2(
    setup: _Setup,
    stats: PlanStats,
    positions: np.ndarray[Any, np.dtype[np.int64]],
    key_arr: np.ndarray[Any, np.dtype[np.uint64]],
    db_path: Path,
    on_reject: RejectCallback | None = None,
) -> None:
    """Stream the source again; spill the chosen rows, with prompt tokens, to SQLite by plan position."""
    con = sqlite3.connect(db_path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE plan (pos INTEGER PRIMARY KEY, label TEXT NOT NULL, record TEXT NOT NULL)")
        per_message: dict[str, int] = {}
        tokens_per_submix = dict.fromkeys(SUBMIXES, 0)
        batch: list[tuple[int, str, str]] = []
        found, candidate = 0, 0
        dups = np.flatnonzero(positions == _DUPLICATE) if on_reject is not None else np.zeros(0)
        last_duplicate = int(dups[-1]) if len(dups) else -1  # read on to it, for its rejected.jsonl line
        rows = setup.source.iter_rows(None, SourceStats())
        with contextlib.closing(rows):
            for item in _walk(setup, rows, None, None):
                if candidate >= len(key_arr) or int(key_arr[candidate]) != item.key:
                    raise SourceError(
                        f"the source changed while planning (row {item.row.where} differs from the first "
                        "pass); plan from a local copy of the data"
                    )
                pos = int(positions[candidate])
                candidate += 1
                if pos == _DUPLICATE and on_reject is not None:
                    on_reject(
                        _drop_rejection(
                            item.row, "duplicate", "an earlier row has the same (system, question)"
                        )
                    )
                if pos < 0:
                    if found == stats.planned_total and candidate > last_duplicate:
                        break
                    continue
                record = _record(item.row, item.index, item.choice)
                record.prompt_tokens = count_chat_tokens(record.messages(), setup.encoding)
                if setup.limit is not None and record.prompt_tokens > setup.limit:
                    raise PlanError(
                        f"request {record.id} ({record.source}) is too long: "
                        f"{_too_long_detail(setup, record.prompt_tokens)}; lower --max-tokens, choose a "
                        "model with a larger context, or set on_too_long: reject"
                    )
                per_message[item.choice.label] = per_message.get(item.choice.label, 0) + 1
                tokens_per_submix[record.submix] += record.prompt_tokens
                batch.append((pos, item.choice.label, json.dumps(record.to_dict(), ensure_ascii=False)))
                if len(batch) >= _SPILL_BATCH:
                    con.executemany("INSERT INTO plan VALUES (?, ?, ?)", batch)
                    batch.clear()
                found += 1
                if found == stats.planned_total and candidate > last_duplicate:
                    break
        con.executemany("INSERT INTO plan VALUES (?, ?, ?)", batch)
        con.commit()
    finally:
        con.close()
    if found != stats.planned_total:
        raise SourceError(
            f"the source changed while planning (found {found} of {stats.planned_total} planned rows on the "
            "second pass); plan from a local copy of the data"
        )
    stats.planned_per_system_message = {k: per_message[k] for k in sorted(per_message, key=_label_order)}
    stats.prompt_tokens_per_submix = tokens_per_submix
    stats.prompt_tokens = sum(tokens_per_submix.values())


# ---- run directory files ---------------------------------------------------------------------------------
def request_body(record: Record, config: RunConfig) -> dict[str, Any]:
    """The chat-completions body for ``record`` (chat or reasoning model: see :mod:`tracegen.params`)."""
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

    write_files_atomically([run / "plan.jsonl", run / "requests.jsonl"], write_lines)
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

    write_files_atomically([run / "plan_stats.json"], write_stats)
    return stats


def plan_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Stream the non-blank lines of the plan file ``path`` with their line numbers (1-based)."""
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, the generator may stop early
    except OSError as e:
        raise RunDirError(
            f"{path}: cannot read the plan ({e.strerror}); plan the run first (--dry-run)"
        ) from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, line


def iter_plan(run_dir: str | Path) -> Iterator[Record]:
    """Stream the Records of ``run_dir/plan.jsonl`` in plan order."""
    path = Path(run_dir) / "plan.jsonl"
    for lineno, line in plan_lines(path):
        try:
            yield Record.from_dict(json.loads(line))
        except (json.JSONDecodeError, TypeError) as e:
            raise RunDirError(f"{path}:{lineno}: not a plan record ({e}); plan the run again") from None


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
        "encoding": encoding_for_model(config.model, config.price_file),
        "context_window": info.context_window if info else None,
        "max_tokens": config.max_tokens,
        "on_too_long": config.on_too_long,
        "shard": config.shard,
    }
    if config.decontaminate:  # only when set, so existing run directories keep their fingerprint
        params["decontaminate"] = decontamination_parameters(config)
    return params
