"""Choosing the plan: submix quotas, candidate thresholds, dedup, per-submix sampling, interleaving, and
the prompt tokens of the chosen rows written to the plan table (step 1-2 of :mod:`tracegen.planning.plan`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import PlanError, SourceError
from ..records import SUBMIXES
from .mix import ZERO_SHOT_TEMPLATES, interleave, quotas, select_submix
from .plan_pass import (
    _RANK_SPACE,
    REJECTIONS_PER_REASON,
    _is_bigbench,
    _second_pass,
    _Setup,
    _too_long_detail,
)
from .plan_spill import _SPILL_BATCH, _cand_record, _plan_values, _Store
from .plan_stats import PlanStats, label_order
from .sources import RejectCallback, Rejection
from .tokens import chat_tokens_counter


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
        if template in ZERO_SHOT_TEMPLATES and not (submix == "t0" and _is_bigbench(task)):
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


def _choose_and_spill(
    setup: _Setup,
    stats: PlanStats,
    shares: dict[str, Any],
    task_ids: dict[tuple[str, str], int],
    key_arr: Any,
    task_arr: Any,
    store: _Store,
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
        _reject_duplicates(store, np.flatnonzero(~keep), on_reject)
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
    chosen = {tid: store.lowest_ranked(tid, len(pos), keep) for tid, pos in picks.items()}
    short = {tid for tid, rows in chosen.items() if len(rows) < len(picks[tid])}
    if short:
        _second_pass(setup, stats, key_arr, task_arr, keep, short, store)
        chosen.update({tid: store.lowest_ranked(tid, len(picks[tid]), keep) for tid in short})
        if any(len(chosen[tid]) < len(picks[tid]) for tid in short):
            raise SourceError(
                "the source changed while planning (rows of the first pass are missing on the second); "
                "plan from a local copy of the data"
            )
    _spill_plan(setup, stats, store, chosen, picks)


def _spill_plan(
    setup: _Setup,
    stats: PlanStats,
    store: _Store,
    chosen: dict[int, list[int]],
    picks: dict[int, Any],
) -> None:
    """Count the prompt tokens of the chosen rows and write them to the plan table by position."""
    per_message: dict[str, int] = {}
    tokens_per_submix = dict.fromkeys(SUBMIXES, 0)
    batch: list[tuple[Any, ...]] = []
    where: dict[int, int] = {}
    for tid, seqs in chosen.items():
        where.update(zip(seqs, picks[tid].tolist(), strict=True))
    count = chat_tokens_counter(setup.encoding)
    limit = setup.limit
    # one sequential scan of the candidates (about 1.1x the plan) rather than a lookup per task
    for seq, label, *cand in store.scan():
        pos = where.get(seq)
        if pos is None:
            continue
        submix, _index, question, *_, system, _train = cand  # _Store.scan's candidate columns
        tokens = count(system, question)
        if limit is not None and tokens > limit:
            record = _cand_record(tuple(cand))
            raise PlanError(
                f"request {record.id} ({record.source}) is too long: "
                f"{_too_long_detail(setup, tokens)}; lower --max-tokens, choose a "
                "model with a larger context, or set on_too_long: reject"
            )
        per_message[label] = per_message.get(label, 0) + 1
        tokens_per_submix[submix] += tokens
        batch.append((pos, label, *_plan_values(cand, tokens)))
        if len(batch) >= _SPILL_BATCH:
            store.add_plan(batch)
            batch = []
    store.add_plan(batch)
    store.finish()
    stats.planned_per_system_message = {k: per_message[k] for k in sorted(per_message, key=label_order)}
    stats.prompt_tokens_per_submix = tokens_per_submix
    stats.prompt_tokens = sum(tokens_per_submix.values())


def _reject_duplicates(store: _Store, seqs: Any, on_reject: RejectCallback) -> None:
    """rejected.jsonl lines for duplicate rows the plan leaves out: those kept aside as candidates, at most
    :data:`REJECTIONS_PER_REASON` (one pass keeps no other copy of them; plan_stats.json counts them all)."""
    sent = 0
    for start in range(0, len(seqs), _SPILL_BATCH):
        rows = store.candidates([int(s) for s in seqs[start : start + _SPILL_BATCH]])
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
