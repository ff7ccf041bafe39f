"""Aggregate a run directory into the report's data: one streaming pass per file, bounded memory.

Everything comes from the run directory alone: ``manifest.json``, ``stats.json``, ``plan_stats.json``,
``clean_stats.json``, ``ledger.jsonl``, ``traces.jsonl`` (with the online engine's ``answered_at``,
``latency_s`` and ``retried``), ``failed.jsonl``, ``rejected.jsonl`` and ``clean.jsonl``; a staged run's
``stages/<name>/`` directories too. Per-row data is reduced as it streams (time buckets, fixed histogram
bins, counters); only the sample browser keeps rows: a seeded reservoir of kept rows, a few per rejection
reason, a few per staged question. A million-row run gives a report of a few hundred kilobytes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..cleaning import handoff
from ..errors import RunDirError
from ..publish import clean_digest as digest
from ..rundir import RunPaths, open_read, read_json_if_exists, read_jsonl_numbered

__all__ = ["LENGTH_BINS", "collect"]

#: Completion-token bin edges of the length histograms (last bin: everything above).
LENGTH_BINS = (0, 25, 50, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200)
#: Latency bin edges, seconds.
LATENCY_BINS = (0, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
SAMPLE_KEPT = 400
SAMPLE_PER_REASON = 40
EXAMPLES_PER_REASON = 3
SAMPLE_STAGED = 60
TEXT_CHARS = 3000
MAX_POINTS = 240
_NUMBER = (int, float)
_CHUNK = 4096
"""Traces aggregated at a time (their few fields; bounded memory)."""


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    """Objects of a JSONL file; a torn or foreign line is skipped (the report never fails on one)."""
    if not path.exists():
        return
    for _, obj in read_jsonl_numbered(path, skip_invalid=True):
        if type(obj) is dict:  # what orjson gives for an object
            yield obj


def _bin(value: float, edges: tuple[float, ...]) -> int:
    """The last bin whose lower edge ``value`` reaches (edges ascending; below the first, or NaN: 0)."""
    if value != value:  # NaN reaches no edge
        return 0
    return max(0, bisect.bisect_right(edges, value) - 1)


def _label(rec: Mapping[str, Any]) -> str:
    sid = rec.get("system_message_id")
    return str(sid) if sid is not None else "template"


def _clip(text: Any) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= TEXT_CHARS else s[:TEXT_CHARS] + f" … [{len(s) - TEXT_CHARS:,} more characters]"


def _example(line: Mapping[str, Any], rec: Mapping[str, Any]) -> dict[str, Any]:
    """One example of a rejection reason: a rejected.jsonl line and its record."""
    return {
        "id": line.get("id", ""),
        "detail": str(line.get("detail", ""))[:300],
        "question": _clip(rec.get("question"))[:400],
        "eval_item": rec.get("eval_item"),
    }


def _row(rec: Mapping[str, Any], status: str, stage: str = "") -> dict[str, Any]:
    """One sample-browser row: what a person needs to judge an answer."""
    return {
        "id": rec.get("id", ""),
        "submix": rec.get("submix", ""),
        "sm": _label(rec),
        "system": _clip(rec.get("system_prompt")),
        "question": _clip(rec.get("question")),
        "response": _clip(rec.get("response")),
        "target": _clip(rec.get("target")),
        "verdict": rec.get("agrees_with_target"),
        "status": status,
        "stage": stage or rec.get("stage") or "",
        "tokens": rec.get("completion_tokens") or 0,
    }


@dataclass
class _Timeline:
    """Answers bucketed by wall time (or by answer count when the traces carry no time), bounded in size.

    Buckets start 10 ms wide and double (neighbours merged) whenever there are more than 8x the points a
    chart draws, so a day-long million-answer run and a one-second rehearsal both end with a few hundred.
    """

    buckets: dict[int, list[float]] = field(default_factory=dict)
    """floor(answered_at / res_s) -> [answers, cost_usd, latency sum, retries, 429s]."""
    res_s: float = 0.01
    untimed_cost: list[float] = field(default_factory=list)
    untimed_step: int = 1
    """Answers per entry of ``untimed_cost``."""
    _untimed_open: int = 0
    """Answers already summed into the last entry of ``untimed_cost``."""
    latency_hist: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BINS))
    latency_n: int = 0

    def add_many(
        self, costs: Iterable[Any], times: Iterable[Any], latencies: Iterable[Any], retries: Iterable[Any]
    ) -> None:
        """Add answers in file order, given as columns: their ``cost_usd``, ``answered_at``, ``latency_s`` and
        ``retried`` values (None: not in the record)."""
        buckets, res_s, hist = self.buckets, self.res_s, self.latency_hist
        for cost_or_none, t, lat, retried in zip(costs, times, latencies, retries, strict=True):
            cost = float(cost_or_none or 0.0)
            if not isinstance(t, _NUMBER):
                self._add_untimed(cost)
                continue
            k = int(t / res_s)
            b = buckets.get(k)
            if b is None:
                b = buckets[k] = [0, 0.0, 0.0, 0, 0]
            b[0] += 1
            b[1] += cost
            if isinstance(lat, _NUMBER):
                b[2] += lat
                hist[_bin(lat, LATENCY_BINS)] += 1
                self.latency_n += 1
            if retried:  # most answers were not retried
                b[3] += len(retried)
                b[4] += retried.count(429) if type(retried) is list else sum(1 for r in retried if r == 429)
            if len(buckets) > 8 * MAX_POINTS:
                self._coarsen()
                buckets, res_s = self.buckets, self.res_s

    def _add_untimed(self, cost: float) -> None:
        if self.untimed_cost and self._untimed_open < self.untimed_step:
            self.untimed_cost[-1] += cost
            self._untimed_open += 1
        else:
            self.untimed_cost.append(cost)
            self._untimed_open = 1
        if len(self.untimed_cost) > 4 * MAX_POINTS:  # merge pairs: bounded whatever the run's size
            c = self.untimed_cost
            self.untimed_cost = [c[i] + (c[i + 1] if i + 1 < len(c) else 0) for i in range(0, len(c), 2)]
            self.untimed_step *= 2
            self._untimed_open = self.untimed_step if len(c) % 2 == 0 else self._untimed_open

    def _coarsen(self) -> None:
        merged: dict[int, list[float]] = {}
        for k, v in self.buckets.items():
            agg = merged.setdefault(k // 2, [0, 0.0, 0.0, 0, 0])
            for i in range(5):
                agg[i] += v[i]
        self.buckets = merged
        self.res_s *= 2

    def series(self) -> dict[str, Any]:
        if not self.buckets:
            cum, out = 0.0, []
            for i, c in enumerate(self.untimed_cost):
                cum += c
                out.append([(i + 1) * self.untimed_step, round(cum, 9)])
            return {"timed": False, "points": out}
        k0, k1 = min(self.buckets), max(self.buckets)
        per = max(1, math.ceil((k1 - k0 + 1) / MAX_POINTS))
        width = per * self.res_s
        grouped: dict[int, list[float]] = {}
        for k, v in self.buckets.items():
            agg = grouped.setdefault((k - k0) // per, [0, 0.0, 0.0, 0, 0])
            for i in range(5):
                agg[i] += v[i]
        cum, points = 0.0, []
        for j in range(max(grouped) + 1):
            n, cost, lat, retries, n429 = grouped.get(j, [0, 0.0, 0.0, 0, 0])
            cum += cost
            points.append(
                [
                    round((j + 1) * width, 4),
                    round(cum, 9),
                    round(n / width, 3),
                    round(lat / n, 4) if n else None,
                    round(retries / width, 3),
                    round(n429 / width, 3),
                ]
            )
        return {"timed": True, "start": k0 * self.res_s, "bucket_s": round(width, 4), "points": points}


@dataclass
class _Lengths:
    """Completion-token histograms per group."""

    hist: dict[str, list[int]] = field(default_factory=dict)
    total: Counter[str] = field(default_factory=Counter)

    def add_many(self, groups: list[str], tokens: list[int], bins: list[int]) -> None:
        """Count answers: ``groups[i]`` answered ``tokens[i]`` tokens, length bin ``bins[i]``.

        Counted per distinct (group, bin) in C; groups enter ``hist`` in first-seen order, as one by one."""
        for g in dict.fromkeys(groups):
            if g not in self.hist:
                self.hist[g] = [0] * len(LENGTH_BINS)
        for (g, b), n in Counter(zip(groups, bins, strict=True)).items():
            self.hist[g][b] += n
        total = self.total
        for g, t in zip(groups, tokens, strict=True):
            total[g] += t

    def to_dict(self) -> dict[str, Any]:
        return {
            g: {"bins": h, "n": sum(h), "mean": round(self.total[g] / max(1, sum(h)), 1)}
            for g, h in sorted(self.hist.items(), key=lambda kv: _order(kv[0]))
        }


def _order(label: str) -> tuple[int, int, str]:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def _stages(run: Path, manifest: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(stage name, directory holding traces) in training order; ("", run) for an unstaged run."""
    root = RunPaths(run).stages
    if not root.is_dir():
        return [("", run)]
    configured = [
        s.get("name") for s in (manifest.get("config") or {}).get("stages") or [] if isinstance(s, dict)
    ]
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    names = [n for n in configured if n in found] + [n for n in found if n not in configured]
    return [(n, root / n) for n in names]


class _Collector:
    def __init__(self, run: Path, seed: int) -> None:
        self.run = run
        self.rng = random.Random(seed)
        self.timeline = _Timeline()
        self.lengths = {"submix": _Lengths(), "system message": _Lengths(), "stage": _Lengths()}
        self.answered_submix: Counter[str] = Counter()
        self.answered_sm: Counter[str] = Counter()
        self.system_texts: dict[str, str] = {}
        self.failed: Counter[str] = Counter()
        self.failed_429 = 0
        self.reasons: Counter[tuple[str, str]] = Counter()
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.rejected_rows: dict[str, list[dict[str, Any]]] = {}
        self.decontaminated: Counter[str] = Counter()
        self.check: dict[str, Counter[str]] = {}
        self.kept: list[dict[str, Any]] = []
        self.kept_seen = 0
        self.ledger = {"budget_usd": None, "spent_usd": 0.0, "sessions": 0}

    # ---- traces ---------------------------------------------------------------------------------------------
    def traces(self, stage: str, path: Path) -> None:
        noted: list[tuple[Any, ...]] | None = handoff.noted("traces", RunPaths(path).traces)
        if noted is not None:  # clean read every line just now: its notes are this loop's rows
            for start in range(0, len(noted), _CHUNK):
                self._traces(stage, noted[start : start + _CHUNK])
        else:
            lines = _lines(RunPaths(path).traces)
            while rows := [handoff.trace_fields(rec) for rec in itertools.islice(lines, _CHUNK)]:
                self._traces(stage, rows)
        for rec in _lines(RunPaths(path).failed):
            err = rec.get("error") or {}
            self.failed[str(err.get("code") or err.get("status") or err.get("type") or "error")] += 1
            self.failed_429 += sum(
                1 for c in rec.get("chain") or [] if isinstance(c, dict) and c.get("status") == 429
            )
        for ev in _lines(RunPaths(path).ledger):
            if ev.get("event") == "open":
                self.ledger["sessions"] = int(self.ledger["sessions"] or 0) + 1
                if ev.get("budget_usd") is not None:
                    self.ledger["budget_usd"] = ev["budget_usd"]
            elif ev.get("event") == "close":
                self.ledger["spent_usd"] = float(self.ledger["spent_usd"] or 0) + float(
                    ev.get("spent_usd") or 0
                )

    def _traces(self, stage: str, rows: list[tuple[Any, ...]]) -> None:
        """A chunk of traces (:func:`~tracegen.cleaning.handoff.trace_fields`: read at once, so a record's long texts are freed at once), a column at a time: list comprehensions and Counters."""
        costs, times, latencies, retries, submix_col, sids, prompts, token_col, models = zip(
            *rows, strict=True
        )
        self.timeline.add_many(costs, times, latencies, retries)
        submixes = [str(s) for s in submix_col]
        sms = ["template" if sid is None else str(sid) for sid in sids]  # _label
        self.answered_submix.update(submixes)
        self.answered_sm.update(sms)
        texts = self.system_texts
        for sm, prompt in zip(sms, prompts, strict=True):
            if sm not in texts and prompt is not None:
                texts[sm] = str(prompt)
        tokens = [int(t or 0) for t in token_col]
        edges = LENGTH_BINS
        bins = [max(0, bisect.bisect_right(edges, t) - 1) for t in tokens]  # _bin: an int is never NaN
        groups = [stage] * len(rows) if stage else [str(m or "teacher") for m in models]
        self.lengths["submix"].add_many(submixes, tokens, bins)
        self.lengths["system message"].add_many(sms, tokens, bins)
        self.lengths["stage"].add_many(groups, tokens, bins)

    # ---- rejections and kept rows ---------------------------------------------------------------------------
    def rejected(self, stage: str, path: Path) -> None:
        file = RunPaths(path).rejected
        noted: list[handoff.Rejected] | None = None
        if not stage and not self.reasons:  # an unstaged run's only rejected.jsonl
            noted = handoff.noted("rejected", file)
        if noted is not None:  # clean wrote the file just now and noted what is counted of each line
            self._rejected_noted(stage, file, noted)
            return
        for line in _lines(file):
            st, reason = str(line.get("stage", "")), str(line.get("reason", ""))
            if stage and st == "plan":
                continue  # a stage's copy of the plan's rejections: counted once, at the top
            self.reasons[(st, reason)] += 1
            raw = line.get("record")
            rec: dict[str, Any] = raw if isinstance(raw, dict) else {}
            if reason == "contaminated":
                self.decontaminated[str(rec.get("eval_set", ""))] += 1
            if st in ("filter", "dedup"):
                self._verdict(rec)
            ex = self.examples.setdefault(reason, [])
            if len(ex) < EXAMPLES_PER_REASON:
                ex.append(_example(line, rec))
            self._reservoir(
                self.rejected_rows.setdefault(reason, []),
                SAMPLE_PER_REASON,
                self.reasons[(st, reason)],
                lambda r=rec, why=reason: _row(r, why, stage),
            )

    def _rejected_noted(self, stage: str, file: Path, noted: list[handoff.Rejected]) -> None:
        """:meth:`rejected` over clean's notes of ``file`` (an unstaged run's): the same counts and the same
        random draws in the same order, parsing only the lines that end up as examples or in the sample."""
        examples: dict[str, list[int]] = {}  # reason -> its example lines
        picks: dict[str, list[int]] = {}  # reason -> its sampled lines (the reservoir of :meth:`rejected`)
        for i, (st, reason, eval_set, submix, agrees) in enumerate(noted):
            self.reasons[(st, reason)] += 1
            if reason == "contaminated":
                self.decontaminated[eval_set] += 1
            if st in ("filter", "dedup"):
                self._count_verdict(submix, digest.verdict(agrees))
            ex = examples.setdefault(reason, [])
            if len(ex) < EXAMPLES_PER_REASON:
                ex.append(i)
            sample = picks.setdefault(reason, [])
            if len(sample) < SAMPLE_PER_REASON:
                sample.append(i)
            else:
                j = self.rng.randrange(self.reasons[(st, reason)])
                if j < SAMPLE_PER_REASON:
                    sample[j] = i
        wanted = {i for lines in [*examples.values(), *picks.values()] for i in lines}
        parsed = {i: (line, _record_of(line)) for i, line in _rows_at(file, wanted).items()}
        for reason, lines in examples.items():
            self.examples[reason] = [_example(*parsed[i]) for i in lines]
        for reason, lines in picks.items():
            self.rejected_rows[reason] = [_row(parsed[i][1], reason, stage) for i in lines]

    def clean(self, stage: str, path: Path) -> None:
        file = RunPaths(path).clean
        noted = digest.noted(file)
        if noted is not None:  # the export counted the rows: parse only the sampled ones
            for (submix, verdict), n in noted.verdicts.items():
                self._count_verdict(submix, verdict, n)
            self._sample_from(file, noted.rows, stage)
            return
        for rec in _lines(file):
            self._verdict(rec)
            self.kept_seen += 1
            self._reservoir(self.kept, SAMPLE_KEPT, self.kept_seen, lambda r=rec: _row(r, "kept", stage))

    def _sample_from(self, file: Path, rows: int, stage: str) -> None:
        """The kept-row sample over ``rows`` more rows of ``file``, as :meth:`clean`'s reservoir draws it (the
        same random draws in the same order), parsing only the rows that end up in it."""
        slots: dict[int, int] = {}  # sample slot -> row of this file
        filled = len(self.kept)
        for i in range(rows):
            self.kept_seen += 1
            if filled < SAMPLE_KEPT:
                slots[filled] = i
                filled += 1
            elif (j := self.rng.randrange(self.kept_seen)) < SAMPLE_KEPT:
                slots[j] = i
        wanted = set(slots.values())
        parsed = {i: _row(rec, "kept", stage) for i, rec in _rows_at(file, wanted).items()}
        for slot in sorted(slots):  # new slots come in order, after the filled ones
            if slot < len(self.kept):
                self.kept[slot] = parsed[slots[slot]]
            else:
                self.kept.append(parsed[slots[slot]])

    def _verdict(self, rec: Mapping[str, Any]) -> None:
        self._count_verdict(str(rec.get("submix", "")), digest.verdict(rec.get("agrees_with_target")))

    def _count_verdict(self, submix: str, verdict: str, n: int = 1) -> None:
        counts = self.check.get(submix)
        if counts is None:
            counts = self.check[submix] = Counter()
        counts[verdict] += n

    def _reservoir(self, sample: list[dict[str, Any]], size: int, seen: int, make: Any) -> None:
        if len(sample) < size:
            sample.append(make())
        else:
            j = self.rng.randrange(seen)
            if j < size:
                sample[j] = make()


def _side_by_side(stages: list[tuple[str, Path]], rng: random.Random) -> list[dict[str, Any]]:
    """Questions answered by every stage, each with every stage's answer (the last stage is the subset)."""
    if len(stages) < 2:
        return []
    chosen: list[str] = []
    for seen, rec in enumerate(_lines(RunPaths(stages[-1][1]).traces), 1):
        if len(chosen) < SAMPLE_STAGED:
            chosen.append(str(rec.get("id")))
        elif (j := rng.randrange(seen)) < SAMPLE_STAGED:
            chosen[j] = str(rec.get("id"))
    wanted = set(chosen)
    rows: dict[str, dict[str, Any]] = {}
    for name, path in stages:
        for rec in _lines(RunPaths(path).traces):
            rid = str(rec.get("id"))
            if rid in wanted:
                row = rows.setdefault(rid, {**_row(rec, "answered"), "answers": {}})
                row["answers"][name] = {
                    "model": rec.get("model_returned") or rec.get("model") or "",
                    "response": _clip(rec.get("response")),
                    "tokens": rec.get("completion_tokens") or 0,
                }
    return [rows[i] for i in chosen if i in rows and len(rows[i]["answers"]) == len(stages)]


def collect(run_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """The report's data for ``run_dir`` (JSON-able), streamed from its files."""
    run = Path(run_dir)
    if not RunPaths(run).manifest.is_file() and not RunPaths(run).plan.is_file():
        raise RunDirError(
            f"{run}: not a tracegen run directory (no manifest.json / plan.jsonl); pass a run dir"
        )
    manifest = read_json_if_exists(RunPaths(run).manifest) or {}
    stats = read_json_if_exists(RunPaths(run).stats) or {}
    plan = read_json_if_exists(RunPaths(run).plan_stats) or {}
    clean = read_json_if_exists(RunPaths(run).clean_stats) or {}
    stages = _stages(run, manifest)
    c = _Collector(run, seed)
    c.rejected("", run) if len(stages) > 1 else None
    for name, path in stages:
        c.traces(name, path)
        c.rejected(name, path) if len(stages) > 1 else c.rejected("", path)
        c.clean(name, path)
    stage_stats = {name: read_json_if_exists(RunPaths(path).stats) or {} for name, path in stages if name}
    config = manifest.get("config") or stats.get("config") or {}
    budget = stats.get("budget_usd", config.get("budget_usd"))
    spent = stats.get("total_spent_usd", stats.get("cost_usd"))
    if spent is None and stage_stats:
        spent = sum(float(s.get("total_spent_usd", s.get("cost_usd", 0)) or 0) for s in stage_stats.values())
    rows = c.kept + [r for rs in c.rejected_rows.values() for r in rs]
    planned_submix, planned_sm = _planned(plan, [path for name, path in stages if name])
    return {
        "report_format": 1,
        "run": run.resolve().name,
        "created": manifest.get("created_at", ""),
        "version": manifest.get("tracegen_version", ""),
        "model": config.get("model", ""),
        "stages": [n for n, _ in stages if n],
        "budget_usd": budget if budget is not None else c.ledger["budget_usd"],
        "spent_usd": spent if spent is not None else c.ledger["spent_usd"],
        "stats": {k: v for k, v in stats.items() if k != "config"},
        "stage_stats": {n: {k: v for k, v in s.items() if k != "config"} for n, s in stage_stats.items()},
        "timeline": c.timeline.series(),
        "latency": {"edges": LATENCY_BINS, "bins": c.timeline.latency_hist, "n": c.timeline.latency_n},
        "failed": dict(c.failed),
        "failed_429": c.failed_429,
        "mix": {
            "submix": _mix(planned_submix, c.answered_submix, clean.get("rows_per_submix") or {}),
            "system_message": _mix(planned_sm, c.answered_sm, clean.get("rows_per_system_message") or {}),
            "system_texts": c.system_texts,
        },
        "plan": {
            k: plan.get(k) for k in ("rows_read", "dropped", "planned_total", "decontaminated", "shortfall")
        },
        "reasons": _reasons(c.reasons, plan.get("dropped") or {}),
        "examples": c.examples,
        "decontaminated": dict(plan.get("decontaminated") or c.decontaminated),
        "lengths": {"edges": LENGTH_BINS, **{k: v.to_dict() for k, v in c.lengths.items()}},
        "answer_check": {k: dict(v) for k, v in sorted(c.check.items())},
        "clean": {k: clean.get(k) for k in ("records", "kept", "rejected_by_filter", "removed_by_dedup")},
        "rows": rows,
        "side_by_side": _side_by_side(stages, c.rng),
    }


def _mix(
    planned: Mapping[str, Any], answered: Mapping[str, int], kept: Mapping[str, Any]
) -> list[dict[str, Any]]:
    keys = sorted(set(planned) | set(answered) | set(kept), key=_order)
    return [
        {
            "key": k,
            "planned": int(planned.get(k, 0)),
            "answered": int(answered.get(k, 0)),
            "kept": int(kept.get(k, 0)),
        }
        for k in keys
    ]


def _planned(plan: Mapping[str, Any], stage_dirs: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """Planned requests per submix and per system message: the plan's, or the sum of the stages' plans."""
    sources = [read_json_if_exists(RunPaths(d).plan_stats) or {} for d in stage_dirs] or [plan]
    submix: Counter[str] = Counter()
    sm: Counter[str] = Counter()
    for p in sources:
        submix.update({k: int(v) for k, v in (p.get("planned") or {}).items()})
        sm.update({k: int(v) for k, v in (p.get("planned_per_system_message") or {}).items()})
    return submix, sm


def _reasons(counted: Counter[tuple[str, str]], dropped: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Drop reasons, most first. rejected.jsonl keeps a bounded sample of the plan's own drops (few-shot,
    Big-Bench, duplicates...), so their counts come from plan_stats.json, which counts them all."""
    out = []
    for (stage, reason), n in counted.items():
        if stage in ("plan", "source") and isinstance(dropped.get(reason), int):
            n = max(n, int(dropped[reason]))
        out.append({"stage": stage, "reason": reason, "n": n})
    return sorted(out, key=lambda r: -int(r["n"]))


def _rows_at(file: Path, wanted: set[int]) -> dict[int, Any]:
    """The JSON values of the ``wanted`` rows of ``file`` (row i: its i-th non-blank line), the rest unparsed."""
    parsed: dict[int, Any] = {}
    i = 0
    with open_read(file) as fp:
        for line in fp:
            if line.isspace():
                continue
            if i in wanted:
                parsed[i] = orjson.loads(line)
            i += 1
    return parsed


def _record_of(line: dict[str, Any]) -> dict[str, Any]:
    """The ``record`` object of a rejected.jsonl line ({} when it has none)."""
    rec = line.get("record")
    return rec if isinstance(rec, dict) else {}
