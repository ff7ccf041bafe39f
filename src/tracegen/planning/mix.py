"""The Orca sampling plan over FLAN v2, computed on counts (no row is held in memory here).

Rules (Orca §3.1.2, Table 3; see ``ORCA.md``):

* Zero-shot templates only (``zs_opt``, ``zs_noopt``); few-shot (``fs_*``) rows are dropped and counted.
* T0 without Big-Bench tasks: a T0 task whose name contains ``bigbench``, ``big_bench``, ``big-bench`` or
  the word ``bbh`` (case-insensitive) is dropped and counted (BBH is an evaluation set). Only T0 is filtered.
* Shares: ``orca`` = Table 3 (cot 150K : niv 440K : flan 2.5M : t0 2M), ``uniform``, or a share table
  ``{cot: .., niv: .., flan: .., t0: ..}`` (missing submixes get 0); quotas are the shares scaled to ``n``
  by largest remainder (they add up to exactly ``n``).
* CoT: take all rows (up to the quota; a uniformly random subset when there are more).
* NIv2: at most ``niv_max_per_task`` rows per task (a random subset of each task), then a uniformly random
  subset of that pool when it exceeds the quota — i.e. a random subset of the Orca NIv2 set.
* Flan2021 and T0: Algorithm 1 — pick a task uniformly at random among the tasks that still have rows, then
  a row of it uniformly at random without replacement; repeat until the quota is met or rows run out.
* Shortfall: a submix with fewer eligible rows than its quota gives all it has and the shortfall is
  reported; by default it is **not** redistributed to other submixes (the plan is then smaller than ``n``),
  so the plan keeps the shares the user asked for wherever rows exist; ``fill_shortfall`` gives the missing
  rows to the other submixes in proportion to their shares (:func:`tracegen.planning.plan.build_plan`).

Order: within a submix rows come in sampling order (the Algorithm 1 sequence, or a random order), so any
prefix of a submix is itself a sample by the same rule. Submixes are interleaved by earliest-deadline-first
over their planned counts ``w_s`` (Steiner & Yeomans' just-in-time sequencing): copy ``j`` of submix ``s``
may go at position ``k`` once ``k·w_s ≥ (j-1)·P + 1`` and must go by ``ceil(j·P / w_s)``; at each position
the released copy with the earliest deadline goes first (ties: cot, niv, flan, t0). For every prefix of
length ``k`` each submix then has within ±(1 - 1/P) of ``k · w_s / P`` rows — any prefix follows the mix.

Randomness: numpy's legacy ``RandomState`` (its stream is frozen by NEP 19) seeded from a hash of
(seed, purpose), so the same source and seed give the same plan on every machine and numpy version.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from ..records import SUBMIXES

__all__ = [
    "ORCA_TABLE3",
    "ZERO_SHOT_TEMPLATES",
    "Selection",
    "algorithm1",
    "interleave",
    "is_bigbench",
    "is_zero_shot",
    "mix_shares",
    "quotas",
    "rng_for",
    "select_submix",
]

#: Orca Table 3: FLAN-5M queries per submix.
ORCA_TABLE3: dict[str, int] = {"cot": 150_000, "niv": 440_000, "flan": 2_500_000, "t0": 2_000_000}
ZERO_SHOT_TEMPLATES = frozenset({"zs_opt", "zs_noopt"})
_BIGBENCH = re.compile(r"big[_\- ]?bench|(?<![a-z])bbh(?![a-z])", re.IGNORECASE)
_DRAW_CHUNK = 1 << 16

IntArray = npt.NDArray[np.int64]


def is_zero_shot(template_type: str) -> bool:
    """zs_opt or zs_noopt."""
    return template_type in ZERO_SHOT_TEMPLATES


def is_bigbench(task_name: str) -> bool:
    """A Big-Bench / BBH task name (dropped from T0)."""
    return _BIGBENCH.search(task_name) is not None


def mix_shares(mix: str | Mapping[str, float]) -> dict[str, Fraction]:
    """Normalised shares per submix (cot, niv, flan, t0), exact fractions adding up to 1."""
    if isinstance(mix, str):
        if mix == "orca":
            weights: dict[str, Fraction] = {s: Fraction(ORCA_TABLE3[s]) for s in SUBMIXES}
        elif mix == "uniform":
            weights = {s: Fraction(1) for s in SUBMIXES}
        else:
            raise ConfigError(f"unknown mix {mix!r}; use orca, uniform or a share table {{cot: .., ...}}")
    else:
        unknown = sorted(set(mix) - set(SUBMIXES))
        if unknown:
            raise ConfigError(f"mix: unknown submix {unknown}; use cot, niv, flan, t0")
        weights = {s: Fraction(mix.get(s, 0.0)) for s in SUBMIXES}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError("mix: shares must be >= 0 and add up to more than 0")
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def quotas(n: int, shares: Mapping[str, Fraction]) -> dict[str, int]:
    """``n`` split by ``shares`` with the largest-remainder method (ties: submix order); sums to ``n``."""
    exact = {s: n * shares.get(s, Fraction(0)) for s in SUBMIXES}
    out = {s: int(exact[s]) for s in SUBMIXES}
    left = n - sum(out.values())
    order = sorted(SUBMIXES, key=lambda s: (-(exact[s] - out[s]), SUBMIXES.index(s)))
    for s in order[:left]:
        out[s] += 1
    return out


def rng_for(seed: int, purpose: str) -> np.random.RandomState:
    """A RandomState for one purpose, seeded from (seed, purpose)."""
    digest = hashlib.blake2b(f"{seed}\x1f{purpose}".encode(), digest_size=4).digest()
    return np.random.RandomState(int.from_bytes(digest, "big"))


def algorithm1(counts: Sequence[int], quota: int, rng: np.random.RandomState) -> IntArray:
    """Orca Algorithm 1 on counts: the sequence of task indices picked (length ``min(quota, sum)``)."""
    steps = min(quota, int(sum(counts)))
    remaining = [int(c) for c in counts]
    active = [t for t, c in enumerate(remaining) if c > 0]
    seq = array("q")
    while len(seq) < steps:
        for x in rng.random_sample(min(_DRAW_CHUNK, steps - len(seq))).tolist():
            j = int(x * len(active))
            t = active[j]
            seq.append(t)
            remaining[t] -= 1
            if remaining[t] == 0:
                active[j] = active[-1]
                active.pop()
    return np.frombuffer(seq, dtype=np.int64).copy() if seq else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Selection:
    """The rows one submix contributes, in sampling order: (task index, row index within the task)."""

    task: IntArray
    local: IntArray

    def __len__(self) -> int:
        return len(self.task)


def _locals_for_sequence(task_seq: IntArray, counts: Sequence[int], rng: np.random.RandomState) -> IntArray:
    """For each pick of a task in ``task_seq``, a row of that task drawn without replacement."""
    local = np.zeros(len(task_seq), dtype=np.int64)
    if not len(task_seq):
        return local
    order = np.argsort(task_seq, kind="stable")
    taken = np.bincount(task_seq, minlength=len(counts))
    start = 0
    for t in range(len(counts)):
        k = int(taken[t])
        if k:
            local[order[start : start + k]] = rng.permutation(int(counts[t]))[:k]
            start += k
    return local


def _pooled(counts: Sequence[int], quota: int, cap: int | None, rng: np.random.RandomState) -> Selection:
    """Up to ``cap`` random rows per task, then a random subset of the pool (random order)."""
    sizes = np.asarray(counts, dtype=np.int64).reshape(-1)
    tasks = np.flatnonzero(sizes > 0)
    if not len(tasks):
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    full = sizes[tasks]
    kept = full if cap is None else np.minimum(full, cap)
    # the pool in task order: task t's rows 0..kept-1 (built at once, not a few arrays per task) ...
    pool_task = np.repeat(tasks, kept)
    starts = np.cumsum(kept) - kept
    pool_local = np.arange(len(pool_task), dtype=np.int64) - np.repeat(starts, kept)
    # ... except that a task over the cap keeps a random subset: the same draws, in the same task order
    for i in np.flatnonzero(full > kept).tolist():
        pool_local[starts[i] : starts[i] + kept[i]] = rng.permutation(int(full[i]))[: int(kept[i])]
    pick = rng.permutation(len(pool_task))[:quota]
    return Selection(pool_task[pick].astype(np.int64), pool_local[pick])


def select_submix(
    submix: str, counts: Sequence[int], quota: int, *, seed: int, niv_max_per_task: int
) -> Selection:
    """The rows ``submix`` contributes, given eligible rows per task and its quota (Orca rules above)."""
    rng = rng_for(seed, f"select:{submix}")
    if quota <= 0:
        return Selection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if submix == "cot":
        return _pooled(counts, quota, None, rng)
    if submix == "niv":
        return _pooled(counts, quota, niv_max_per_task, rng)
    if submix in ("flan", "t0"):
        task_seq = algorithm1(counts, quota, rng)
        return Selection(task_seq, _locals_for_sequence(task_seq, counts, rng))
    raise ConfigError(f"unknown submix {submix!r}")


def interleave(weights: Sequence[int]) -> npt.NDArray[np.int8]:
    """Submix index for each plan position: EDF just-in-time sequence, every prefix within ±1 of the mix."""
    total = int(sum(weights))
    w = [int(x) for x in weights]
    m = len(w)
    taken = [0] * m
    # release time and deadline of each submix's next copy (copy j = taken + 1), see the module docstring
    release = [1] * m
    deadline = [-(-total // w[s]) if w[s] else 0 for s in range(m)]
    live = [s for s in range(m) if w[s]]
    out = array("b")
    k = 1
    while k <= total:
        if len(live) == 1:  # one submix left: the rest is all its
            s = live[0]
            out.extend(array("b", [s]) * (w[s] - taken[s]))
            break
        best, best_deadline = -1, total + 1
        for s in live:
            if release[s] <= k and deadline[s] < best_deadline:
                best, best_deadline = s, deadline[s]
        if best < 0:  # pragma: no cover - impossible by Steiner & Yeomans' theorem
            raise AssertionError(f"interleave found no submix for position {k} of {total}")
        out.append(best)
        j = taken[best] = taken[best] + 1
        if j == w[best]:
            live.remove(best)
        else:
            release[best] = -(-(j * total + 1) // w[best])
            deadline[best] = -(-((j + 1) * total) // w[best])
        k += 1
    result: npt.NDArray[np.int8] = np.frombuffer(out, dtype=np.int8).copy()
    return result
