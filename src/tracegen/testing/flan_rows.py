"""Synthetic FLAN prompts for tests and benchmarks: rows with and without option lists, rendered by FLAN's rule.

:func:`mc_rows` gives ``(prompt, has_options)`` pairs: every start string × every item style × every end
string once with options (placed as FLAN templates place ``{options_}``: after a blank line, a newline or a
space, sometimes followed by ``A:`` / ``Answer:``), and as many option-free prompts (generative templates over
the same passages, with dashes, numbers, enumerations in prose and the words "options"/"choices").
"""

from __future__ import annotations

import random

from ..planning.flan_options import END_STRINGS, ITEM_STYLES, OPTION_STARTS, render_options

__all__ = ["mc_rows"]

_PASSAGES = (
    "The museum - opened in 1998 - holds 3,000 paintings. Its director said it was the city's best year.",
    "Sales rose 4.5% in May. Analysts had expected 2. The firm - a maker of chips - will report on Friday.",
    "I went there with my kids. The food was fine, the service slow; we waited 40 minutes for a table.",
    "Step one is to wash the rice. Step two: boil 2 cups of water. Then add salt and cover the pot.",
    "John lent Bill his car because he was away. Mr. A. Smith, the neighbour, saw them at 5 p.m.",
    "The team has several options for the final. Choices made early - like the line-up - matter most.",
    "Premise: A man in a red shirt is riding a bike. Hypothesis: A person is outdoors.",
    "Sentence 1: It rained all day. Sentence 2: The match was cancelled (as expected).",
)
_MC_QUESTIONS = (
    "{p}\n\nWhat is the sentiment of this text?",
    "{p}\nQuestion: Is the hypothesis entailed by the premise?",
    "Read the text and answer. {p} Which of these is true?",
    "{p}\n\nChoose the best answer. What happens next?",
    "Multi-choice problem: {p}",
    "{p}\nBased on that paragraph can we conclude that the sentence below is true?",
)
_PLACEMENTS = ("{q}\n\n{o}", "{q}\n{o}", "{q} {o}", "{q}\n{o}\nA:", "{q}\n\n{o}\nAnswer:")
_OPTION_SETS = (
    ("yes", "no"),
    ("yes", "it is not possible to tell", "no"),
    ("negative", "positive"),
    ("World", "Sports", "Business", "Science/Tech"),
    ("He goes home", "She buys a car", "They leave early", "Nothing happens", "It rains"),
)
_GENERATIVE = (
    "{p}\n\nWrite a one-sentence summary of the above.",
    "Translate to French:\n\n{p}",
    "{p}\n\nWhat is a title for this text?",
    "Write a 5-star review (1 being lowest and 5 being highest) about an app. {p}",
    "{p}\nGenerate a question about this text. Options are welcome - be creative.",
    "Solve 2 - 1 = x. {p}",
    "{p}\n\nNumber the steps in your answer (1. wash, 2. boil) - in your own words.",
    "Context: {p}\n\nQuestion: Who was away?\n\nAnswer:",
    "{p}\n\nSummarize the article - in 20 words - for a child.",
    "Answer the question. {p}\nWhat did the director say?",
)


def mc_rows(seed: int = 0) -> list[tuple[str, bool]]:
    """Prompts labelled with whether they carry an option list (see the module docstring)."""
    rng = random.Random(seed)
    rows: list[tuple[str, bool]] = []
    for start in OPTION_STARTS:
        for style in ITEM_STYLES:
            for end in END_STRINGS:
                question = rng.choice(_MC_QUESTIONS).format(p=rng.choice(_PASSAGES))
                options = render_options(rng.choice(_OPTION_SETS), start, style, end)
                rows.append((rng.choice(_PLACEMENTS).format(q=question, o=options), True))
    negatives = len(rows)
    for _ in range(negatives):
        rows.append((rng.choice(_GENERATIVE).format(p=rng.choice(_PASSAGES)), False))
    rng.shuffle(rows)
    return rows
