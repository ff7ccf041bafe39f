"""Offline answer check: does the teacher's FINAL answer agree with FLAN's short reference answer?

SlimOrca kept only answers GPT-4 judged to agree with FLAN's target; tracegen does it offline, free and
deterministic. :func:`check_answer` returns True (agrees), False (disagrees) or None (can't tell, or the
target is not a short answer). :func:`explain` returns the whole :class:`Verdict` (what was compared,
which rule).

What counts as a short target (:func:`resolve_target`):

* an **option** of the question: FLAN lists them as ``OPTIONS:\\n- yes\\n- no``, ``(A) 12 (B) 24``,
  ``A). foo\\nB). bar``, ``Choose from: ...``; the target is the option text or its label ("(B)", "B");
* a **number** ("42", "1,234", "$18", "3.5", "3/4", "25%");
* a **label** of a known family (yes/no, true/false, positive/negative/neutral, entailment/neutral/
  contradiction, entailment/not_entailment, acceptable/unacceptable, correct/incorrect);
* a **short phrase** of at most 5 words ("Paris", "the Eiffel Tower");
* a long CoT target ending in "So the answer is X." / "#### X" is reduced to X first.

How the response's final answer is found (:func:`explain`), first rule that yields an answer wins:

1. explicit statements ("the (correct|final) answer is ...", "Answer: ...", "I would choose ...", "the
   sentiment ... is ...", "#### 42", "\\boxed{42}", "X is the correct answer") — the LAST one wins, so
   "Answer: A ... wait, the answer is B" gives B;
2. conclusions ("Therefore, ...", "So, ...", "Thus ...", "In conclusion ...") — the last one;
3. the very beginning of the response ("Yes, ...", "B) Paris ...", "Positive.");
4. assertions ("the review is positive"), the last one;
5. the only option/label mentioned (not negated) anywhere; then the only one in the last sentence that
   mentions any.

Mentions that are negated ("not B", "B is incorrect", "rather than yes", "B can be ruled out") never count.
Common words as answers (yes, no, true, false, bare letters and numbers as option texts) only count inside
statements, at a sentence start, or standing alone, because "there is no evidence" is not an answer "no".
Numbers compare numerically (commas, $, %, units and trailing zeros ignored; rounding to the target's
decimals allowed). Short phrases agree when the response's statement (or, without one, the response)
contains the target; they disagree only when an explicit statement (or a response of a few words) shares no
word with the target.

By concern: :mod:`.answer_check_targets` (options, label families, the short target),
:mod:`.answer_check_numbers` (numbers compared numerically), :mod:`.answer_check_response` (where the
response states its answer); this module puts them together and evaluates the check on labelled examples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..records import Record
from .answer_check_numbers import _same_number
from .answer_check_response import (
    Verdict,
    _build_candidates,
    _check_phrase,
    _final_choice,
    _final_number,
    _numbers_in,
)
from .answer_check_targets import MAX_OPTION_WORDS as MAX_OPTION_WORDS
from .answer_check_targets import MAX_PHRASE_WORDS as MAX_PHRASE_WORDS
from .answer_check_targets import Option, Target, _clean, parse_options, resolve_target
from .answer_check_targets import TargetKind as TargetKind

__all__ = [
    "Option",
    "Target",
    "Verdict",
    "annotate",
    "check_answer",
    "explain",
    "parse_options",
    "resolve_target",
]


def explain(question: str, target: str, response: str | None) -> Verdict:
    """Compare the response's final answer with the target; see the module docstring for the rules."""
    tgt = resolve_target(question, target)
    if tgt is None:
        return Verdict(None, None, rule="not_short")
    if response is None or not response.strip():
        return Verdict(None, tgt, rule="no_response")
    text = _clean(response)
    if tgt.kind == "number":
        assert tgt.value is not None
        found = _final_number(text, question)
        if found is not None:
            value, rule = found
            return Verdict(_same_number(value, tgt.value, tgt.answer), tgt, f"{value:g}", rule)
        values = [v for _, v in _numbers_in(text, words=len(text) < 500)]
        if any(_same_number(v, tgt.value, tgt.answer) for v in values):
            return Verdict(True, tgt, tgt.answer, "contains")
        if values:
            return Verdict(False, tgt, f"{values[-1]:g}", "numbers_present")
        return Verdict(None, tgt, None, "no_answer")
    if tgt.kind == "phrase":
        return _check_phrase(text, tgt)
    cands = _build_candidates(tgt)
    choice = _final_choice(text, cands)
    if choice is None:
        return Verdict(None, tgt, None, "no_answer")
    key, rule = choice
    want = tgt.choices.index(tgt.answer)
    return Verdict(key == want, tgt, tgt.choices[key], rule)


def check_answer(question: str, target: str, response: str | None) -> bool | None:
    """True if the response's final answer agrees with FLAN's short target, False if it disagrees, None if
    it can't tell (or the target is not a short answer)."""
    return explain(question, target, response).agrees


def annotate(record: Record) -> Record:
    """A copy of ``record`` with ``agrees_with_target`` set by :func:`check_answer`."""
    return replace(record, agrees_with_target=check_answer(record.question, record.target, record.response))


# ---- evaluation on labelled examples -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evaluation:
    """Precision/recall of the answer check on labelled examples (label True / False / None)."""

    n: int
    confusion: dict[str, dict[str, int]]
    """confusion[label][prediction] with keys "true", "false", "null"."""
    mistakes: list[dict[str, object]]

    def precision(self, label: bool) -> float:
        """Share of predictions ``label`` that are right."""
        key = _key(label)
        predicted = sum(row[key] for row in self.confusion.values())
        return self.confusion[key][key] / predicted if predicted else 0.0

    def recall(self, label: bool) -> float:
        """Share of examples labelled ``label`` that are predicted so."""
        key = _key(label)
        total = sum(self.confusion[key].values())
        return self.confusion[key][key] / total if total else 0.0

    def summary(self) -> dict[str, object]:
        """JSON-able figures for the README."""
        return {
            "examples": self.n,
            "agrees_true": {
                "precision": round(self.precision(True), 3),
                "recall": round(self.recall(True), 3),
            },
            "agrees_false": {
                "precision": round(self.precision(False), 3),
                "recall": round(self.recall(False), 3),
            },
            "confusion": self.confusion,
        }


def _key(value: bool | None) -> str:
    return "null" if value is None else ("true" if value else "false")


def evaluate(examples: Iterable[dict[str, object]]) -> Evaluation:
    """Run the check over examples with keys question, target, response, label (true/false/null)."""
    confusion = {a: {b: 0 for b in ("true", "false", "null")} for a in ("true", "false", "null")}
    mistakes: list[dict[str, object]] = []
    n = 0
    for ex in examples:
        n += 1
        label = ex["label"]
        verdict = explain(str(ex["question"]), str(ex["target"]), str(ex["response"]))
        got = verdict.agrees
        confusion[_key(label if isinstance(label, bool) else None)][_key(got)] += 1
        if got != label:
            mistakes.append({**ex, "predicted": got, "rule": verdict.rule, "found": verdict.response_answer})
    return Evaluation(n, confusion, mistakes)
