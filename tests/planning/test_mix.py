"""The Orca mix on counts: shares, quotas, Algorithm 1, NIv2 cap, CoT take-all, interleaving."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracegen.errors import ConfigError
from tracegen.planning.mix import (
    ORCA_TABLE3,
    algorithm1,
    interleave,
    is_bigbench,
    is_zero_shot,
    mix_shares,
    quotas,
    rng_for,
    select_submix,
)


def test_orca_table3_shares_scale_to_n() -> None:
    shares = mix_shares("orca")
    assert quotas(5_090_000, shares) == ORCA_TABLE3
    assert quotas(1_000_000, shares) == {"cot": 29470, "niv": 86444, "flan": 491159, "t0": 392927}
    assert sum(shares.values()) == 1


def test_uniform_and_share_table() -> None:
    assert quotas(10, mix_shares("uniform")) == {"cot": 3, "niv": 3, "flan": 2, "t0": 2}
    assert quotas(100, mix_shares({"flan": 3, "t0": 1})) == {"cot": 0, "niv": 0, "flan": 75, "t0": 25}
    with pytest.raises(ConfigError, match="unknown submix"):
        mix_shares({"dialog": 1.0})
    with pytest.raises(ConfigError, match="more than 0"):
        mix_shares({"cot": 0.0})
    with pytest.raises(ConfigError, match="unknown mix"):
        mix_shares("balanced")


@given(
    n=st.integers(min_value=0, max_value=10**7),
    weights=st.lists(st.integers(min_value=0, max_value=1000), min_size=4, max_size=4).filter(any),
)
def test_quotas_add_up_and_are_within_one_of_exact(n: int, weights: list[int]) -> None:
    shares = mix_shares(dict(zip(["cot", "niv", "flan", "t0"], map(float, weights), strict=True)))
    q = quotas(n, shares)
    assert sum(q.values()) == n
    for s, v in q.items():
        assert abs(v - n * shares[s]) < 1


@pytest.mark.parametrize(
    ("name", "bigbench"),
    [
        ("bigbench_logical_deduction", True),
        ("big_bench_date", True),
        ("BIG-bench_x", True),
        ("bbh_date_understanding", True),
        ("task_bbh", True),
        ("wiki_qa_demo", False),
        ("subbhaga_qa", False),
    ],
)
def test_is_bigbench(name: str, bigbench: bool) -> None:
    assert is_bigbench(name) is bigbench


def test_zero_shot_only() -> None:
    assert is_zero_shot("zs_opt") and is_zero_shot("zs_noopt")
    assert not is_zero_shot("fs_opt") and not is_zero_shot("fs_noopt")


# ---- Algorithm 1 -----------------------------------------------------------------------------------------
def test_algorithm1_picks_tasks_uniformly_not_by_size() -> None:
    counts = [10_000, 100, 10_000, 10_000]
    seq = algorithm1(counts, 3_000, rng_for(0, "t"))
    picked = Counter(seq.tolist())
    assert len(seq) == 3_000
    assert picked[1] == 100  # the small task is exhausted...
    for t in (0, 2, 3):  # ...and the others share the rest evenly, not in proportion to size
        assert abs(picked[t] - 2_900 / 3) < 120


def test_algorithm1_without_replacement_and_stops_when_rows_run_out() -> None:
    counts = [3, 0, 5]
    seq = algorithm1(counts, 100, rng_for(1, "t"))
    assert sorted(Counter(seq.tolist()).items()) == [(0, 3), (2, 5)]


def test_algorithm1_prefix_is_balanced() -> None:
    seq = algorithm1([1000] * 10, 10_000, rng_for(2, "t")).tolist()
    head = Counter(seq[:200])
    assert set(head) == set(range(10)) and max(head.values()) < 40


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=12),
    quota=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_select_flan_never_exceeds_task_rows_and_is_distinct(
    counts: list[int], quota: int, seed: int
) -> None:
    sel = select_submix("t0", counts, quota, seed=seed, niv_max_per_task=300)
    assert len(sel) == min(quota, sum(counts))
    pairs = list(zip(sel.task.tolist(), sel.local.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)
    assert all(0 <= local < counts[task] for task, local in pairs)


# ---- NIv2 cap and CoT take-all ---------------------------------------------------------------------------
def test_niv_at_most_cap_per_task() -> None:
    counts = [340, 20, 1000, 5]
    sel = select_submix("niv", counts, 10_000, seed=0, niv_max_per_task=300)
    per_task = Counter(sel.task.tolist())
    assert per_task == {0: 300, 1: 20, 2: 300, 3: 5}
    assert len(set(zip(sel.task.tolist(), sel.local.tolist(), strict=True))) == 625


def test_niv_over_quota_is_a_random_subset_of_the_capped_pool() -> None:
    sel = select_submix("niv", [1000, 1000], 100, seed=3, niv_max_per_task=30)
    per_task = Counter(sel.task.tolist())
    assert len(sel) == 60 and per_task == {0: 30, 1: 30}
    sel = select_submix("niv", [1000, 1000, 10], 20, seed=3, niv_max_per_task=30)
    assert len(sel) == 20 and max(Counter(sel.task.tolist()).values()) <= 30


def test_cot_takes_all_up_to_quota() -> None:
    assert len(select_submix("cot", [40, 60], 1000, seed=0, niv_max_per_task=300)) == 100
    sel = select_submix("cot", [40, 60], 30, seed=0, niv_max_per_task=300)
    assert len(sel) == 30


def test_selection_is_seeded() -> None:
    a = select_submix("flan", [50, 80, 20], 60, seed=1, niv_max_per_task=300)
    b = select_submix("flan", [50, 80, 20], 60, seed=1, niv_max_per_task=300)
    c = select_submix("flan", [50, 80, 20], 60, seed=2, niv_max_per_task=300)
    assert np.array_equal(a.task, b.task) and np.array_equal(a.local, b.local)
    assert not (np.array_equal(a.task, c.task) and np.array_equal(a.local, c.local))


def test_zero_quota_selects_nothing() -> None:
    assert len(select_submix("niv", [10, 10], 0, seed=0, niv_max_per_task=300)) == 0


# ---- interleaving: any prefix follows the mix ------------------------------------------------------------
def max_prefix_deviation(order: np.ndarray, weights: list[int]) -> Fraction:
    total = sum(weights)
    seen = [0] * len(weights)
    worst = Fraction(0)
    for k, s in enumerate(order.tolist(), start=1):
        seen[s] += 1
        for i, w in enumerate(weights):
            worst = max(worst, abs(Fraction(seen[i]) - Fraction(k * w, total)))
    return worst


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=4).filter(any))
def test_every_prefix_is_within_one_of_the_mix(weights: list[int]) -> None:
    order = interleave(weights)
    assert Counter(order.tolist()) == {i: w for i, w in enumerate(weights) if w}
    assert max_prefix_deviation(order, weights) < 1


def test_known_hard_case_for_greedy_largest_deficit() -> None:
    weights = [262, 265, 19, 1]  # the naive "most behind first" rule overshoots by 1/547 here
    assert max_prefix_deviation(interleave(weights), weights) < 1


def test_orca_interleave_prefix() -> None:
    weights = list(quotas(2_000, mix_shares("orca")).values())
    order = interleave(weights).tolist()
    shares = [w / sum(weights) for w in weights]
    for k in (1, 10, 34, 100, 1_000, 1_999):
        head = Counter(order[:k])
        assert all(abs(head[i] - k * shares[i]) < 1 for i in range(4)), (k, head)
    assert order[0] == 2  # flan, the largest share, goes first
