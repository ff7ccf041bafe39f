"""Answer check: target classification, final-answer extraction, and precision/recall on labelled data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tracegen.cleaning.answer_check import (
    Option,
    annotate,
    check_answer,
    evaluate,
    explain,
    parse_options,
    resolve_target,
)
from tracegen.records import Record

LABELLED = Path(__file__).resolve().parents[1] / "data" / "answer_check_labelled.jsonl"


def load_labelled() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- the labelled set --------------------------------------------------------------------------------------
def test_labelled_set_is_big_and_covers_the_families() -> None:
    rows = load_labelled()
    assert len(rows) >= 150
    for row in rows:
        assert set(row) >= {"question", "target", "response", "label", "family"}
        assert row["label"] in (True, False, None)
    families = {r["family"] for r in rows}
    assert families >= {"cot_math", "nli_options", "nli_label", "yesno", "mc_letter", "mc_text", "sentiment"}
    assert families >= {"open_phrase", "long_target", "truefalse", "tricky"}
    labels = [r["label"] for r in rows]
    assert labels.count(True) >= 60 and labels.count(False) >= 50 and labels.count(None) >= 15


def test_precision_and_recall_floors() -> None:
    ev = evaluate(load_labelled())
    # agrees=False is what a filter acts on: wrongly calling a good row "disagrees" costs data.
    assert ev.precision(False) >= 0.93
    assert ev.recall(False) >= 0.85
    assert ev.precision(True) >= 0.95
    assert ev.recall(True) >= 0.90


def test_heldout_floors() -> None:
    """The second batch was written after the rules were tuned on the first one and never tuned on."""
    ev = evaluate([r for r in load_labelled() if r.get("split") == "heldout"])
    assert ev.n >= 60
    assert ev.precision(False) >= 0.9 and ev.recall(False) >= 0.8
    assert ev.precision(True) >= 0.9 and ev.recall(True) >= 0.9


def test_evaluation_counts_are_consistent() -> None:
    rows = load_labelled()[:40]
    ev = evaluate(rows)
    assert sum(sum(r.values()) for r in ev.confusion.values()) == 40
    right = sum(ev.confusion[k][k] for k in ("true", "false", "null"))
    assert right + len(ev.mistakes) == 40
    summary = ev.summary()
    json.dumps(summary)
    assert summary["examples"] == 40


def test_evaluate_detects_a_broken_checker() -> None:
    """Flip every label: the figures must collapse (the metric can fail)."""
    flipped = [{**r, "label": (not r["label"]) if r["label"] is not None else None} for r in load_labelled()]
    ev = evaluate(flipped)
    assert ev.precision(False) < 0.2 and ev.precision(True) < 0.2


# ---- option parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Q?\nOPTIONS:\n- yes\n- no", [(None, "yes"), (None, "no")]),
        ("Q? Options: (A) 12 (B) 24 (C) 36", [("A", "12"), ("B", "24"), ("C", "36")]),
        (
            "Q?\nOptions:\n(A) 12\n(B) 24\n(C) 36 Let's think step by step.",
            [("A", "12"), ("B", "24"), ("C", "36")],
        ),
        ("Which?\nChoose your answer from:\n A). cat\n B). dog", [("A", "cat"), ("B", "dog")]),
        ("Pick:\n(1). World\n(2). Sports", [("1", "World"), ("2", "Sports")]),
        (
            "Pick:\n[I] shark\n[II] dolphin\n[III] trout",
            [("I", "shark"), ("II", "dolphin"), ("III", "trout")],
        ),
        (
            "Pick your answer from:\n + it tasted bland.\n + it was salty.",
            [(None, "it tasted bland."), (None, "it was salty.")],
        ),
        ("Tell me a story about a dog.", []),
        ("Notes:\n- first point\n- second point\nNow write an essay about these points and more things.", []),
    ],
)
def test_parse_options(question: str, expected: list[tuple[str | None, str]]) -> None:
    assert parse_options(question) == [Option(lab, text) for lab, text in expected]


# ---- targets -----------------------------------------------------------------------------------------------
def test_resolve_target_kinds() -> None:
    mc = resolve_target("Q? Options: (A) 12 (B) 24 (C) 36", "(B)")
    assert mc is not None and mc.kind == "option" and mc.answer == "24"
    assert resolve_target("Q?\nOPTIONS:\n- no\n- yes", "yes") == resolve_target(
        "Q?\nOPTIONS:\n- no\n- yes", "Yes."
    )
    num = resolve_target("How many?", "1,234")
    assert num is not None and num.kind == "number" and num.value == 1234
    pct = resolve_target("What percent?", "25%")
    assert pct is not None and pct.value == 25
    lab = resolve_target("Is it?", "Yes")
    assert lab is not None and lab.kind == "label" and lab.choices == ("yes", "no")
    neutral_nli = resolve_target("Premise: x. Hypothesis: y.", "neutral")
    assert neutral_nli is not None and "entailment" in neutral_nli.choices
    neutral_sent = resolve_target("Sentiment of: meh", "neutral")
    assert neutral_sent is not None and "positive" in neutral_sent.choices
    phrase = resolve_target("Capital of France?", "Paris")
    assert phrase is not None and phrase.kind == "phrase"
    cot = resolve_target("Natalia sold...", "She sold 48/2 = 24 in May.\n48 + 24 = 72.\nSo the answer is 72.")
    assert cot is not None and cot.kind == "number" and cot.value == 72
    assert resolve_target("Write a poem.", "Roses are red and violets are blue, sugar is sweet") is None
    assert resolve_target("Q", "") is None


# ---- extraction rules --------------------------------------------------------------------------------------
MC = "Which gas do plants absorb?\n(A) oxygen (B) nitrogen (C) carbon dioxide (D) helium"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Answer: (C)", True),
        ("the correct answer is C) carbon dioxide", True),
        ("The answer is (A). Wait, no: the answer is (C).", True),  # last statement wins
        ("The answer is (C). Hmm, actually the answer is (A).", False),
        ("Not (A): plants absorb (C).", True),  # negation
        ("(B) is incorrect. (C) is the correct answer.", True),
        ("Carbon dioxide, not oxygen.", True),
        ("Plants absorb oxygen at night, so the answer is A.", False),
        ("Photosynthesis is complicated.", None),
    ],
)
def test_multiple_choice(response: str, expected: bool | None) -> None:
    assert check_answer(MC, "(C)", response) is expected


@pytest.mark.parametrize(
    ("target", "response", "expected"),
    [
        ("42", "So the answer is 42.", True),
        ("42", "6 * 7 = 42", True),
        ("1,234", "The total is 1234 dollars. The answer is $1,234.", True),
        ("18", "Janet makes 9 * 2 = $18 every day. Therefore, she makes $18.", True),
        ("18", "The answer is 20.", False),
        ("3.5", "The answer is 3.50 km.", True),
        ("0.333", "1/3 is about 0.3333, so the answer is 0.333.", True),
        ("-3", "x = 3", False),
        ("12", "I don't know.", None),
    ],
)
def test_numbers(target: str, response: str, expected: bool | None) -> None:
    assert check_answer("How much? Let's think.", target, response) is expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Yes.", True),
        ("Yes, it is.", True),
        ("No, it is not.", False),
        ("There is no doubt that the answer is yes.", True),  # "no" in prose is not the answer
        ("No one doubts it, so yes.", True),
        ("It is raining.", None),
    ],
)
def test_yes_no(response: str, expected: bool | None) -> None:
    assert check_answer("Is it raining?", "yes", response) is expected


def test_nli_options_with_cannot_tell_synonyms() -> None:
    q = (
        "Premise: A woman reads.\nHypothesis: She reads a novel.\n"
        "Options:\n- yes\n- it is not possible to tell\n- no"
    )
    assert check_answer(q, "it is not possible to tell", "This cannot be determined from the premise.")
    assert check_answer(q, "it is not possible to tell", "The answer is yes.") is False
    assert check_answer(q, "no", "There is no evidence either way, so it is not possible to tell.") is False


def test_short_phrase_targets() -> None:
    assert check_answer("Capital of France?", "Paris", "The capital of France is Paris.") is True
    assert check_answer("Capital of France?", "Paris", "The answer is Lyon.") is False
    assert check_answer("Capital of France?", "Paris", "It is a lovely city on a river.") is None


def test_explain_names_the_rule() -> None:
    v = explain(MC, "(C)", "Answer: (C)")
    assert v.agrees is True and v.rule == "statement" and v.response_answer == "carbon dioxide"
    assert explain(MC, "(C)", None).rule == "no_response"
    assert explain("Write a poem.", "A long long target that is not short at all", "x").rule == "not_short"


def test_annotate_sets_agrees_with_target() -> None:
    r = Record(id="cot.1", submix="cot", question="Is it raining?", target="yes", response="Yes.")
    out = annotate(r)
    assert out.agrees_with_target is True and r.agrees_with_target is None
    assert out.key == r.key
