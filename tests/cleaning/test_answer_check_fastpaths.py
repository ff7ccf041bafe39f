"""The answer check's fast paths skip work that cannot change the result; pinned here against the full
computation on texts built to hit their edges (unicode, markdown, LaTeX, option markers)."""

from __future__ import annotations

import random
import unicodedata

from tracegen.cleaning import answer_check_response as R
from tracegen.cleaning.answer_check import explain
from tracegen.cleaning.answer_check_targets import (
    _BOXED,
    _FRAC,
    _MARKDOWN,
    _MARKER,
    _QUOTES,
    Target,
    _clean,
    _may_have_markers,
)


def _clean_every_step(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _BOXED.sub(lambda m: f" the answer is {m.group(1)}. ", text)
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    text = text.replace("\\$", "$").replace("\\%", "%").replace("\\text", "")
    return _MARKDOWN.sub("", text)


_PIECES = [
    "A",
    "B",
    "b",
    "c",
    "J",
    "K",
    "1",
    "2",
    "10",
    "12",
    "13",
    "i",
    "ii",
    "iv",
    "IX",
    "x",
    "vii",
    "xi",
    "(",
    ")",
    "[",
    "]",
    ".",
    ":",
    "-",
    "*",
    "**",
    "_",
    "__",
    "`",
    "\\",
    "\\boxed{4}",
    "\\frac{1}{2}",
]
_PIECES += [
    "\\dfrac{3}{4}",
    "\\$",
    "\\%",
    "\\text",
    "\\(",
    "\\]",
    "’",
    "“",
    "é",
    "ﬁ",
    "①",
    "Ⅳ",
    "answer",
    "Options",
    "foo",
    "e.g.",
    "3.5",
    "$5",
    "word",
]
_PIECES += [" ", "  ", "\t", "\n", "\u00a0", "\u2003"]


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 14))) for _ in range(n)]


def test_clean_fast_path_equals_every_step() -> None:
    for text in _texts(1, 20000):
        assert _clean(text) == _clean_every_step(text), text


def test_marker_prefilter_never_hides_a_marker() -> None:
    extra = ["A. foo", "x (B) y", "i) one ii) two", "Item 12: x", "IV.. five", "a:\tb"]
    for text in [*_texts(2, 40000), *extra]:
        found = [m for m in _MARKER.finditer(text) if m.group("open") or m.group("close")]
        if found:
            assert _may_have_markers(text), text
    assert not _may_have_markers("Item 3012: a west story?\nOPTIONS:\n- world\n- one")
    assert _may_have_markers("Pick one: A. yes B. no")
    assert _may_have_markers("A) yes")


# ---- response side -----------------------------------------------------------------------------------------

_WORDS = [
    "the",
    "a",
    "an",
    "Answer",
    "answer:",
    "is",
    "not",
    "Paris",
    "paris,",
    "Eiffel",
    "Tower",
    "tower.",
    "Leonardo",
    "da",
    "Vinci",
    "so",
    "therefore",
]
_WORDS += [
    "option",
    "choice",
    "I",
    "would",
    "choose",
    "label",
    "sentiment",
    "####",
    "42",
    "é",
    "naïve",
    "ÉLAN",
    "O'Neil",
    "e.g.",
    "u.s.",
    "x_y",
]
_WORDS += [
    "**bold**",
    "`c`",
    "\\boxed{Paris}",
    "-",
    "?",
    "!",
    "’",
    "in",
    "conclusion",
    "overall",
    "relation",
    "go",
    "with",
    "\n",
]


def _check_phrase_whole(text: str, target: Target) -> R.Verdict:
    """The phrase check without its fast path: every word of the response is cut out first."""
    want = R._norm_words(target.answer)
    want_set = set(want.split())
    statement = None
    for _, cue_end in R._find_cues(R._lower(text), R._STRONG_CUES):
        _, end = R._sentence_bounds(text, cue_end)
        window = text[cue_end : max(end, cue_end)]
        if R._content_words(window):
            statement = window
    if statement is not None:
        return R._check_phrase(text, target)  # the statement branch is unchanged
    got = R._norm_words(text)
    if R._has_words(got, want):
        return R.Verdict(True, target, target.answer, "contains")
    if got and len(got.split()) <= min(4, len(want_set) + 2) and not want_set & set(got.split()):
        return R.Verdict(False, target, text.strip(), "short_response")
    return R.Verdict(None, target, None, "no_answer")


def test_check_phrase_fast_path_equals_whole_text() -> None:
    rng = random.Random(7)
    for _ in range(6000):
        answer = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 4)))
        text = _clean(" ".join(rng.choice(_WORDS) for _ in range(rng.randrange(0, 9))))
        target = Target("phrase", answer)
        assert R._check_phrase(text, target) == _check_phrase_whole(text, target), (answer, text)


def test_cue_rules_need_their_words() -> None:
    rng = random.Random(8)
    rules = R._STRONG_CUES + R._CONCLUSION_CUES
    assert all(rule.needs for rule in rules)
    for _ in range(3000):
        low = R._lower(" ".join(rng.choice(_WORDS) for _ in range(rng.randrange(0, 12))))
        for rule in rules:
            for start, end in R._hits(rule, low):
                assert any(word in low[start:end] for word in rule.needs), (rule.pattern.pattern, low)


def test_explain_on_phrase_targets_still_reads_statements() -> None:
    assert explain("Where is the Eiffel Tower?", "Paris", "The answer is Paris.").agrees is True
    assert explain("Where is the Eiffel Tower?", "Paris", "The answer is Rome.").agrees is False
    assert explain("Where is the Eiffel Tower?", "Paris", "Rome.").rule == "short_response"
    assert explain("Where is the Eiffel Tower?", "Paris", "It stands in Paris, France.").rule == "contains"
    long = "It stands in a large city in France near a river with many bridges and museums."
    assert explain("Where is the Eiffel Tower?", "Paris", long).rule == "no_answer"


def test_first_content_words_same_on_lowered_and_normalized_text() -> None:
    from tracegen.cleaning.answer_check_targets import _content_words, _first_content_words, _norm

    rng = random.Random(10)
    extra = ["'a", "a'", ".5", "5.", "x.y", "'.'", "(the)", "An", "\u2003", "\t-", "*", "[ok]", "it's."]
    for _ in range(5000):
        text = " ".join(rng.choice(_WORDS + _PIECES + extra) for _ in range(rng.randrange(0, 10)))
        whole = _content_words(text)
        for limit in (1, 5, 50):
            assert _first_content_words(_clean(text).lower(), limit) == whole[:limit], text
            assert _first_content_words(_norm(text), limit) == whole[:limit], text


def test_marker_labels_are_the_regex_labels() -> None:
    """_may_have_markers looks labels up in _LABELS: it must hold exactly what _MARKER's label group takes."""
    import itertools
    import re

    from tracegen.cleaning.answer_check_targets import _LAB_CHARS, _LABELS

    lab = re.compile(_MARKER.pattern.split("(?P<lab>", 1)[1].split(")(?P<close>", 1)[0])
    alphabet = sorted(_LAB_CHARS | set("KkLyZ0"))
    for size in (1, 2, 3):
        for chars in itertools.product(alphabet, repeat=size):
            s = "".join(chars)
            assert (lab.fullmatch(s) is not None) == (s in _LABELS), s
    assert all(lab.fullmatch(s) for s in _LABELS) and {"VIII", "viii"} <= _LABELS
