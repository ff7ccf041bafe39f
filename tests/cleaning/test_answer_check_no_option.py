"""resolve_target skips parsing the options when no candidate answer can name one (_names_no_option); pinned
here against the full computation on questions and targets built to name options in every way it reads
them (text, alias, label, the last option running into the template's words) and to defeat the shortcut's
premises (unicode, markdown, LaTeX)."""

from __future__ import annotations

import random

import pytest

from tracegen.cleaning import answer_check_targets as T
from tracegen.cleaning.answer_check_targets import resolve_target

_OPTIONS = [
    "OPTIONS:\n- yes\n- no",
    "Choose from:\n- positive\n- negative\nAnswer:",
    "(A) 12 (B) 24 (C) the Eiffel Tower",
    "A). red\nB). blue Let's think step by step.",
    "Pick one: i. cats ii. dogs",
    "- it is not possible to tell\n- no\n- yes",
    "\n- **bold** text\n- plain text",
    "- caf\u00e9 au lait\n- tea",
    "- \\boxed{5}\n- 6",
    "- a_b\n- c`d",
]
_TARGETS = ["yes", "No", "no.", "pos", "(B)", "B", "b) 24", "12", "the Eiffel Tower", "blue", "ii", "dogs",
            "it's not possible to tell", "plain", "plain text and more", "bold text", "cafe au lait",
            "caf\u00e9 au lait", "5", ".", "-", "", "  ", "tea\nwith milk", "So the answer is yes.",
            "Paris", "a red car", "a_b", "c`d", "the answer is positive. It is a long target of many words."]  # fmt: skip


def _question(rng: random.Random) -> str:
    head = rng.choice(["Is it so?", "Q: What is it?", "Review: great movie!", "Premise: x. Hypothesis: y."])
    return head + "\n" + rng.choice(_OPTIONS) + rng.choice(["", "\n", "\nA:", " Answer:"])


def _slow(question: str, target: str) -> T.Target | None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "_names_no_option", lambda *_: False)
        return resolve_target(question, target)


def test_the_shortcut_changes_no_target() -> None:
    rng = random.Random(16)
    skipped = 0
    for _ in range(5_000):
        question, target = _question(rng), rng.choice(_TARGETS)
        assert resolve_target(question, target) == _slow(question, target), (question, target)
        short = T._short_target(target) if target.strip() else ""
        skipped += T._names_no_option(question, (target, short, target.strip().split("\n", 1)[0]))
    assert skipped > 500  # the shortcut is taken, and not always


@pytest.mark.parametrize(
    ("question", "target", "kind"),
    [
        ("Is it so?\nOPTIONS:\n- yes\n- no", "yes", "option"),
        ("Is it so?\nOPTIONS:\n- yes\n- no", "Paris", "phrase"),
        ("(A) 12 (B) 24", "(B)", "option"),
        ("Is it so?\nOPTIONS:\n- **bold** text\n- no", "bold text", "option"),  # markdown: no shortcut
    ],
)
def test_examples(question: str, target: str, kind: str) -> None:
    got = resolve_target(question, target)
    assert got is not None and got.kind == kind
    assert got == _slow(question, target)
