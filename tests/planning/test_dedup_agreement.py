"""The plan's dedup and the clean step's default dedup agree: no answer paid for is dropped as a duplicate
of another planned request (issue: 59 of 400 paid answers on the bundled sample were)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.flan import SAMPLE
from tracegen.cleaning.dedup import pair_hash, text_hash
from tracegen.config import RunConfig
from tracegen.pipeline import run
from tracegen.planning.plan import build_plan

REQUEST_KINDS = ("exact_pair", "exact_question", "near_question")


@pytest.mark.parametrize("plan_dedup_questions", [False, True])
def test_no_paid_answer_is_dropped_as_a_duplicate_request(tmp_path: Path, plan_dedup_questions: bool) -> None:
    config = RunConfig(
        source=[str(SAMPLE)],
        n=400,
        output_dir=str(tmp_path / "run"),
        budget_usd=5.0,
        plan_dedup_questions=plan_dedup_questions,
    )
    summary = run(config, rehearse=True)
    paid = len((tmp_path / "run" / "traces.jsonl").read_text(encoding="utf-8").splitlines())
    removed = summary["clean"]["removed_by_dedup"]
    planned = json.loads((tmp_path / "run" / "plan_stats.json").read_text())["planned_total"]
    assert paid == planned > 300 and not any(removed.get(kind) for kind in REQUEST_KINDS), removed
    lines = (tmp_path / "run" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    rejected = [json.loads(x) for x in lines]
    assert not [r for r in rejected if r["stage"] == "dedup" and r["reason"] in REQUEST_KINDS]


def test_plan_keys_are_the_clean_keys() -> None:
    with build_plan(RunConfig(source=[str(SAMPLE)], n=400)) as plan:
        records = list(plan)
    assert max(Counter(pair_hash(r.system_prompt, r.question) for r in records).values()) == 1
    with build_plan(RunConfig(source=[str(SAMPLE)], n=300), dedup_questions=True) as plan:
        assert max(Counter(text_hash(r.question) for r in plan).values()) == 1
