"""The pass over the source: each row classified (few-shot, Big-Bench, contaminated, too long), keyed for
dedup, ranked, and the candidates spilled (step 1 of :mod:`tracegen.planning.plan`), plus the second pass."""

from __future__ import annotations

import contextlib
import functools
import hashlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, SourceError
from ..records import SUBMIXES, Record, pair_hash, text_hash
from .decontaminate import Decontaminator
from .mix import ZERO_SHOT_TEMPLATES, is_bigbench
from .plan_spill import _SPILL_BATCH, _cand_row, _CandRow, _Store
from .plan_stats import PlanStats
from .sources import RejectCallback, Rejection, Source, SourceRow, SourceStats
from .templates import Choice, MCDetector, SystemMessageChooser, get_mc_detector, load_template_set
from .tokens import count_chat_tokens, encoding_for_model, model_info

_CHAT_OVERHEAD_BOUND = 3 + 2 * (3 + 1)  # reply priming + two messages (3 each + a 1-token role)


@functools.lru_cache(maxsize=64)
def _rank_prefix(seed: int, submix: str) -> Any:
    """The blake2b state after ``"{seed}\\0rank\\0{submix}\\0"``: each rank hashes only its index on top."""
    return hashlib.blake2b(f"{seed}\x00rank\x00{submix}\x00".encode("utf-8", "surrogatepass"), digest_size=8)


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


@dataclass(slots=True)
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
    choose, by_question = setup.chooser.choose, setup.dedup_questions
    limit = setup.limit if setup.reject_too_long else None
    for row in rows:
        submix = row.submix
        index = next_index[submix]
        next_index[submix] = index + 1
        if row.template_type not in ZERO_SHOT_TEMPLATES:
            if stats is not None:
                stats.dropped["fewshot"] += 1
                if on_reject is not None and stats.dropped["fewshot"] <= REJECTIONS_PER_REASON:
                    detail = f"template {row.template_type}: Orca takes zero-shot templates only"
                    on_reject(_drop_rejection(row, "fewshot", detail))
            continue
        if submix == "t0" and _is_bigbench(row.task_name):
            if stats is not None:
                stats.dropped["bigbench"] += 1
                if on_reject is not None and stats.dropped["bigbench"] <= REJECTIONS_PER_REASON:
                    on_reject(_drop_rejection(row, "bigbench", "Big-Bench task in T0: Orca leaves them out"))
            continue
        choice = choose(row, index)
        if setup.decontaminator is not None and _contaminated(
            setup.decontaminator, row, index, choice, stats, on_reject
        ):
            continue
        # a str of k characters is at most 4k UTF-8 bytes: most rows skip the byte count below
        if (
            limit is not None
            and 4 * (len(choice.system_prompt) + len(row.question)) > limit - _CHAT_OVERHEAD_BOUND
        ):
            tokens = _prompt_tokens_if_too_long(choice, row, setup.encoding, limit)
            if tokens is not None:
                if stats is not None:
                    stats.dropped["too_long"] += 1
                    if on_reject is not None:
                        on_reject(_too_long_rejection(setup, _record(row, index, choice), tokens))
                continue
        # the clean step's exact_question / exact_pair key
        key = text_hash(row.question) if by_question else pair_hash(choice.system_prompt, row.question)
        yield _Classified(row, index, choice, key)


#: Whether a task is Big-Bench, per task name (a source has a few thousand names at most).
_is_bigbench = functools.lru_cache(maxsize=1 << 14)(is_bigbench)


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


_RANK_SPACE = 1 << 63
"""Ranks are 63-bit (SQLite integers are signed)."""


def _rank(seed: int, submix: str, index: int) -> int:
    """The row's place in its task's random order: a hash of (seed, submix, index), stable across runs."""
    h = _rank_prefix(seed, submix).copy()
    h.update(str(index).encode())
    return int.from_bytes(h.digest(), "big") >> 1


def _read_once(
    setup: _Setup,
    stats: PlanStats,
    thresholds: dict[tuple[str, str], int],
    store: _Store,
    on_reject: RejectCallback | None,
) -> tuple[dict[tuple[str, str], int], Any, Any]:
    """The one full pass: per eligible row a hash and a task number; candidate rows spilled to SQLite."""
    task_ids: dict[tuple[str, str], int] = {}
    keys = array("Q")
    tasks = array("i")
    source_stats = SourceStats()
    batch: list[_CandRow] = []
    seed = setup.config.seed
    rank_of = {s: _rank_prefix(seed, s) for s in SUBMIXES}
    for item in _walk(setup, setup.source.iter_rows(on_reject, source_stats), stats, on_reject):
        submix = item.row.submix
        task = (submix, item.row.task_name)
        tid = task_ids.setdefault(task, len(task_ids))
        seq = len(keys)
        keys.append(item.key)
        tasks.append(tid)
        h = rank_of[submix].copy()  # _rank, inlined: the pass's hottest line
        h.update(str(item.index).encode())
        rank = int.from_bytes(h.digest(), "big") >> 1
        if rank < thresholds.get(task, _RANK_SPACE):
            batch.append(_cand_row(item, seq, tid, rank))
            if len(batch) >= _SPILL_BATCH:
                store.add_candidates(batch)
                stats.candidates += len(batch)
                batch = []
    store.add_candidates(batch)
    stats.candidates += len(batch)
    store.index()
    stats.source_passes = 1
    stats.rows_read = source_stats.rows_read
    stats.dropped["bad_record"] = source_stats.bad_records
    stats.dropped["dialog"] = source_stats.dialog_skipped
    key_arr = np.frombuffer(keys, dtype=np.uint64).copy() if keys else np.zeros(0, dtype=np.uint64)
    task_arr = np.frombuffer(tasks, dtype=np.int32).copy() if tasks else np.zeros(0, dtype=np.int32)
    return task_ids, key_arr, task_arr


def _second_pass(
    setup: _Setup,
    stats: PlanStats,
    key_arr: Any,
    task_arr: Any,
    keep: Any,
    short: set[int],
    store: _Store,
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
    store.add_candidates(batch)
