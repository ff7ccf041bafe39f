"""The report's traces pass counts a column at a time; what it counts must be what one record at a time gives
(the straightforward loop below, which the report used to run), odd records and a coarsened timeline included."""

from __future__ import annotations

import bisect
import importlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tracegen.report.collect import LATENCY_BINS, LENGTH_BINS, MAX_POINTS, _Collector

collect_mod = importlib.import_module(
    "tracegen.report.collect"
)  # the package re-exports a function of that name


def _bin(value: float, edges: tuple[float, ...]) -> int:
    return 0 if value != value else max(0, bisect.bisect_right(edges, value) - 1)


def reference(stage: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One record at a time: the report's traces pass before it counted by columns."""
    buckets: dict[int, list[float]] = {}
    res_s, untimed, lat_hist, lat_n = 0.01, [], [0] * len(LATENCY_BINS), 0
    hist: dict[str, dict[str, list[int]]] = {"submix": {}, "sm": {}, "stage": {}}
    total: dict[str, Counter[str]] = {k: Counter() for k in hist}
    submixes: Counter[str] = Counter()
    sms: Counter[str] = Counter()
    texts: dict[str, str] = {}
    for rec in recs:
        cost = float(rec.get("cost_usd") or 0.0)
        t = rec.get("answered_at")
        if not isinstance(t, int | float):
            untimed.append(cost)
        else:
            b = buckets.setdefault(int(t / res_s), [0, 0.0, 0.0, 0, 0])
            b[0] += 1
            b[1] += cost
            lat = rec.get("latency_s")
            if isinstance(lat, int | float):
                b[2] += lat
                lat_hist[_bin(lat, LATENCY_BINS)] += 1
                lat_n += 1
            retried = rec.get("retried") or []
            b[3] += len(retried)
            b[4] += sum(1 for r in retried if r == 429)
            if len(buckets) > 8 * MAX_POINTS:
                merged: dict[int, list[float]] = {}
                for k, v in buckets.items():
                    agg = merged.setdefault(k // 2, [0, 0.0, 0.0, 0, 0])
                    for i in range(5):
                        agg[i] += v[i]
                buckets, res_s = merged, res_s * 2
        submix = str(rec.get("submix", ""))
        sid = rec.get("system_message_id")
        sm = str(sid) if sid is not None else "template"
        submixes[submix] += 1
        sms[sm] += 1
        if sm not in texts and rec.get("system_prompt") is not None:
            texts[sm] = str(rec.get("system_prompt"))
        tokens = int(rec.get("completion_tokens") or 0)
        for kind, group in (
            ("submix", submix),
            ("sm", sm),
            ("stage", stage or str(rec.get("model") or "teacher")),
        ):
            h = hist[kind].setdefault(group, [0] * len(LENGTH_BINS))
            h[_bin(tokens, LENGTH_BINS)] += 1
            total[kind][group] += tokens
    return {
        "buckets": buckets, "res_s": res_s, "untimed": untimed, "latency": (lat_hist, lat_n),
        "hist": hist, "total": total, "submixes": submixes, "sms": sms, "texts": texts,
    }  # fmt: skip


def traces(n: int, seed: int, spread_s: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        rec: dict[str, Any] = {
            "id": f"r{i}",
            "submix": rng.choice(["cot", "niv", "flan", "t0"]),
            "system_message_id": rng.choice([None, 1, 2, 16]),
            "system_prompt": rng.choice(["", "You are helpful.", None]),
            "completion_tokens": rng.choice([0, 3, 24, 25, 399, 5000, None]),
            "cost_usd": rng.choice([0.0, 1e-5 * i, None, 3]),
            "model": rng.choice(["gpt-4o-mini", "", None]),
            "answered_at": 1_700_000_000 + rng.random() * spread_s,
            "latency_s": rng.choice([0.004, 1, 0.3, None, "slow"]),
            "retried": rng.choice([[], [429], [500, 429, 429], None]),
            "question": "q" * rng.randint(0, 50),
        }
        if i % 11 == 0:
            rec["answered_at"] = None if i % 2 else "yesterday"  # untimed
        if i % 13 == 0:
            del rec["submix"]
        if i % 17 == 0:
            rec["submix"] = None
        out.append(rec)
    return out


@pytest.mark.parametrize(("n", "spread_s", "stage"), [(300, 2.0, ""), (5000, 60.0, ""), (400, 1.0, "gpt4")])
def test_column_counts_equal_record_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, spread_s: float, stage: str
) -> None:
    monkeypatch.setattr(collect_mod, "_CHUNK", 97)  # several chunks
    recs = traces(n, seed=n, spread_s=spread_s)
    (tmp_path / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    c = _Collector(tmp_path, 0)
    c.traces(stage, tmp_path)
    want = reference(stage, recs)
    assert c.timeline.buckets == want["buckets"]
    assert list(c.timeline.buckets) == list(want["buckets"])  # the same order: float sums regroup alike
    assert c.timeline.res_s == want["res_s"]
    assert (c.timeline.latency_hist, c.timeline.latency_n) == want["latency"]
    assert sum(c.timeline.untimed_cost) == pytest.approx(sum(want["untimed"]))
    assert c.answered_submix == want["submixes"]
    assert c.answered_sm == want["sms"]
    assert c.system_texts == want["texts"]
    for kind, ours in (("submix", "submix"), ("sm", "system message"), ("stage", "stage")):
        assert c.lengths[ours].hist == want["hist"][kind]
        assert list(c.lengths[ours].hist) == list(want["hist"][kind])
        assert c.lengths[ours].total == want["total"][kind]
    if spread_s > 30:
        assert want["res_s"] > 0.01  # the timeline was coarsened on the way
