"""Where the response states its final answer: statements, conclusions, the opening, assertions and the
only option mentioned, negations excluded (the rules in :mod:`tracegen.answer_check`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from .answer_check_numbers import _number_words, _scan_numbers
from .answer_check_targets import (
    _ROMAN_UPPER,
    Kind,
    Target,
    _clean,
    _content_words,
    _first_content_words,
    _is_weak,
    _surfaces,
)

# ---- statements in the response ----------------------------------------------------------------------------
# Cue and mention patterns run on a lower-cased copy of the text and each starts with a literal, so ``re``
# can jump to candidate positions; word boundaries before a match are checked by hand (a leading ``\b`` or
# lookbehind would make ``re`` try every position: ~20x slower on a 2 KB answer).
_Before = Literal["word", "space", "sentence", "none"]


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    before: _Before = "word"
    word_after: bool = False
    needs: tuple[str, ...] = ()
    """Words every match contains one of (a ``in`` test skips the regex on texts without them); () = none."""


def _rule(
    pattern: str, before: _Before = "word", word_after: bool = False, needs: tuple[str, ...] = ()
) -> _Rule:
    return _Rule(re.compile(pattern), before, word_after, needs)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _hits(rule: _Rule, text: str) -> Iterator[tuple[int, int]]:
    for m in rule.pattern.finditer(text):
        start, end = m.span()
        if start > 0:
            prev = text[start - 1]
            if rule.before == "word" and _is_word(prev):
                continue
            if rule.before == "space" and not prev.isspace():
                continue
            if rule.before == "sentence":
                k = start - 1
                while k >= 0 and text[k] in " \t":
                    k -= 1
                if k >= 0 and text[k] not in ".!?\n,;":
                    continue
        if rule.word_after and end < len(text) and _is_word(text[end]):
            continue
        yield start, end


def _find_cues(low: str, rules: tuple[_Rule, ...]) -> list[tuple[int, int]]:
    """(start, end) of every cue in the lower-cased text, in order."""
    hits: list[tuple[int, int]] = []
    for rule in rules:
        for word in rule.needs:  # skip the regex when the text lacks every word the rule needs
            if word in low:
                hits.extend(_hits(rule, low))
                break
        else:  # no word found: the rule cannot match, unless it needs none
            if not rule.needs:
                hits.extend(_hits(rule, low))
    hits.sort()
    return hits


_VERDICT_WORDS = [
    "label",
    "category",
    "classification",
    "sentiment",
    "verdict",
    "output",
    "rating",
    "prediction",
    "relationship",
    "relation",
]
_STRONG_CUES: tuple[_Rule, ...] = (
    _rule(
        r"answers?\b(?:\s+(?:to|for)\s+(?:this|the|your)\s+(?:question|problem|task))?\s*(?:(?:is|would\s+be|"
        r"should\s+be|will\s+be|must\s+be|would\s+have\s+to\s+be|here\s+is|becomes)\b\s*:?|:|=|-(?=\s))",
        needs=("answer",),
    ),
    _rule(r"option\s*(?:is|would\s+be|should\s+be|:)", needs=("option",)),
    _rule(r"choice\s*(?:is|would\s+be|should\s+be|:)", needs=("choice",)),
    _rule(
        r"i\s+(?:would\s+|will\s+|'d\s+)?(?:choose|pick|select|go\s+with)\b",
        needs=("choose", "pick", "select", "go"),
    ),
    *(_rule(rf"{w}\b[^.\n]{{0,40}}?\b(?:is|would\s+be|should\s+be|:)", needs=(w,)) for w in _VERDICT_WORDS),
    _rule(r"####", before="none", needs=("####",)),
)
_CONCLUSION_CUES: tuple[_Rule, ...] = (
    *(_rule(rf"{w}\b\s*,?", before="sentence", needs=(w,)) for w in ("so", "hence", "thus")),
    *(
        _rule(rf"{w}\b\s*[:,]?", needs=(w.rsplit("+", 1)[-1],))  # r"in\s+summary" needs "summary"
        for w in (
            "therefore",
            "consequently",
            r"in\s+conclusion",
            r"in\s+summary",
            r"to\s+summarize",
            "overall",
            "conclusion",
        )
    ),
)


def _lower(text: str) -> str:
    """Lower case with the same length as ``text`` (so offsets match); a few characters lower to two."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


_ASSERT_BEFORE = re.compile(
    r"\b(?:is|was|are|be|as|seems|appears|being)\s+(?:(?:overall|generally|mostly|clearly|definitely|largely|"
    r"very|quite|rather|more|predominantly|primarily|likely|probably|most\s+likely|best\s+described\s+as|"
    r"classified\s+as|considered|labeled|labelled)\s+){0,2}[\"']?$",
    re.IGNORECASE,
)
_CORRECT_AFTER = re.compile(
    r"^[\"')\]]{0,2}\s*(?:option\s+|answer\s+|choice\s+)?(?:is|would\s+be|seems)\s+(?:the\s+)?"
    r"(?:correct|right|best|most\s+(?:likely|appropriate|suitable))\b",
    re.IGNORECASE,
)
_WRONG_AFTER = re.compile(
    r"^[\"')\]]{0,2}\s*(?:option\s+|answer\s+|choice\s+)?(?:is|are|was|would\s+be|seems)\s+(?:also\s+)?"
    r"(?:not\s+(?:the\s+)?(?:correct|right|best|true|valid|accurate|supported|a\s+good)|incorrect|wrong|"
    r"invalid|unlikely|a\s+distractor|not\s+supported)\b"
    r"|^[\"')\]]{0,2}\s*(?:can|could)\s+be\s+(?:eliminated|ruled\s+out|excluded)",
    re.IGNORECASE,
)
_NEGATORS = frozenset(
    [
        "not",
        "never",
        "neither",
        "nor",
        "no",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "doesn't",
        "don't",
        "didn't",
        "cannot",
        "can't",
        "won't",
        "wouldn't",
        "shouldn't",
        "without",
        "instead",
        "rather",
        "except",
        "unlike",
        "than",
        "eliminate",
        "exclude",
        "nothing",
        "none",
        "nobody",
        "hardly",
        "barely",
    ]
)
_SO_IS_WRONG = re.compile(
    r"\b(?:wrong|incorrect|not\s+correct|ruled\s+out|eliminated|false)\b[^.!?\n]*\b(?:and\s+)?(?:so|nor|neither)"
    r"\s+(?:is|are|does|was)\s*[\"'(]?$"
)
_WEAK_ASSERT = re.compile(
    r"\b(?:statement|claim|sentence|answer|hypothesis|assertion|premise|it|this|that)\s+(?:is|was|would\s+be)"
    r"\s+(?:(?:therefore|thus|also|definitely|clearly|indeed)\s+)?[\"']?$",
    re.IGNORECASE,
)
_NOT_ASSERT = re.compile(
    r"\b(?:is|was|are|would\s+be)\s+(?:not|n't)\s+(?:(?:really|necessarily|quite)\s+)?[\"']?$|"
    r"\b(?:isn't|wasn't|aren't)\s+[\"']?$",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_LEAD_PREFIX = re.compile(
    r"^\s*(?:#+\s*)?(?:(?:final\s+|short\s+|correct\s+)?answer|output|solution|response|result|a)\s*[:\-]\s*",
    re.IGNORECASE,
)
_CONNECTIVE_START = re.compile(
    r"^(?:\s|[\"'(])*(?:(?:so|thus|hence|therefore|then|and|well|overall|in\s+conclusion|in\s+summary|"
    r"to\s+summarize|the\s+answer\s+is|answer)\W*\s*)?$",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _Mention:
    start: int
    end: int
    key: int
    kind: Kind
    weak: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer check's full result, for debugging and the labelled evaluation."""

    agrees: bool | None
    target: Target | None
    response_answer: str | None = None
    rule: str = ""
    """Which rule decided: statement, conclusion, beginning, assertion, unique, last_sentence, contains,
    short_response, numbers_present, no_answer, not_short, no_response."""


@dataclass(slots=True)
class _Candidates:
    texts: list[str]
    labels: list[str | None]
    weak: list[bool] = field(default_factory=list)
    rules: list[list[tuple[_Rule, Kind, bool]]] = field(default_factory=list)


@lru_cache(maxsize=1 << 14)
def _phrase_rule(surface: str) -> _Rule:
    body = r"[\s_-]+".join(re.escape(tok) for tok in re.split(r"[\s_]+", surface.lower()) if tok)
    return _rule(body, before="word", word_after=True)


@lru_cache(maxsize=256)
def _label_rules(label: str) -> list[tuple[_Rule, Kind, bool]]:
    """(rule, kind, runs on the original-case text?) for an option label such as "B", "b", "2", "iii"."""
    lab = re.escape(label.lower())
    rules: list[tuple[_Rule, Kind, bool]] = [
        (_rule(rf"\({lab}\)", before="none"), "label", False),
        (_rule(rf"\[{lab}\]", before="none"), "label", False),
        (_rule(rf"{lab}\)", before="space", word_after=True), "label", False),
    ]
    for word in ("option", "choice", "answer"):
        rules.append((_rule(rf"{word}\s*:?\s*[(\[]?{lab}(?![\w'])[)\]]?"), "label", False))
    orig = re.escape(label)
    if label.isdigit() or (len(label) == 1 and label.isupper()) or label in _ROMAN_UPPER[1:]:
        rules.append((_rule(rf"{orig}(?![\w']|\.\d)", before="none"), "bare", True))
    elif len(label) == 1:  # lower-case letter: "a" is an article, accept "a." / "a," / "a:" only
        rules.append((_rule(rf"{orig}(?=[.,:;)](?:\s|$)|$)", before="none"), "bare", True))
    return rules


def _build_candidates(target: Target) -> _Candidates:
    labels: list[str | None] = list(target.labels) if target.labels else [None] * len(target.choices)
    cands = _Candidates(list(target.choices), labels)
    for text, label in zip(cands.texts, cands.labels, strict=True):
        rules: list[tuple[_Rule, Kind, bool]] = []
        for surface in _surfaces(text):
            if surface:
                rules.append((_phrase_rule(surface), "text", False))
        if label is not None:
            rules.extend(_label_rules(label))
        cands.rules.append(rules)
        cands.weak.append(_is_weak(text))
    return cands


def _find_mentions(text: str, low: str, cands: _Candidates) -> list[_Mention]:
    found: list[_Mention] = []
    for key, rules in enumerate(cands.rules):
        for rule, kind, orig in rules:
            for start, end in _hits(rule, text if orig else low):
                if kind == "bare" and start and (_is_word(text[start - 1]) or text[start - 1] in "'$.-"):
                    continue
                found.append(_Mention(start, end, key, kind, cands.weak[key] or kind == "bare"))
    # Overlaps: the longer mention wins ("it is not possible to tell" over "no"... and "(B)" over "B").
    found.sort(key=lambda x: (x.start, -(x.end - x.start)))
    kept: list[_Mention] = []
    for m in found:
        if kept and m.start < kept[-1].end:
            if m.end - m.start > kept[-1].end - kept[-1].start:
                kept[-1] = m
            continue
        kept.append(m)
    return kept


@lru_cache(maxsize=16)
def _sentence_marks(text: str) -> tuple[list[int], list[int]]:
    """Start and end offsets of every sentence end ([.!?] before space/end, or a newline), once per text."""
    starts: list[int] = []
    ends: list[int] = []
    for m in _SENTENCE_END.finditer(text):
        starts.append(m.start())
        ends.append(m.end())
    return starts, ends


def _sentence_bounds(text: str, pos: int) -> tuple[int, int]:
    """(start, end) of the sentence holding ``pos`` (bisect over the cached sentence ends)."""
    starts, ends = _sentence_marks(text)
    i = bisect_right(ends, pos)
    j = bisect_left(starts, pos)
    return (ends[i - 1] if i else 0), (starts[j] if j < len(starts) else len(text))


def _negated(text: str, m: _Mention) -> bool:
    s_start, _ = _sentence_bounds(text, m.start)
    before = text[s_start : m.start].lower()
    clause = re.split(r"[,;:(\u2014]", before)[-1]
    words = re.findall(r"[a-z']+", clause)[-5:]
    if any(w in _NEGATORS for w in words):
        return True
    if re.search(r"(?:instead\s+of|rather\s+than|other\s+than)\s*[\"'(]?$", before):
        return True
    if _SO_IS_WRONG.search(before):  # "A is wrong, and so is B"
        return True
    return bool(_WRONG_AFTER.match(text[m.end : m.end + 60]))


def _standalone(text: str, m: _Mention) -> bool:
    """A weak mention counts only when it opens its sentence (after a connective) and is followed by
    punctuation or the end of the line: "No, ...", "So, yes.", "Answer: B."."""
    s_start, _ = _sentence_bounds(text, m.start)
    if not _CONNECTIVE_START.match(text[s_start : m.start]):
        return False
    return bool(re.match(r"^\s*(?:[,.!;:)\]]|-\s|$|\n)", text[m.end : m.end + 3]))


def _first_in_window(text: str, start: int, mentions: list[_Mention]) -> _Mention | None:
    _, end = _sentence_bounds(text, start)
    end = min(max(end, start + 1), start + 160)
    for m in mentions:
        if m.end > start and m.start < end and not _negated(text, m):
            if m.kind == "bare" and m.start - start > 20:
                continue  # a bare letter far from the cue is prose, not the answer
            return m
    return None


def _final_choice(text: str, cands: _Candidates) -> tuple[int, str] | None:
    low = _lower(text)
    mentions = _find_mentions(text, low, cands)
    if not mentions:
        return None
    # 1. explicit statements: the last one wins.
    best: tuple[int, int] | None = None
    for cue_start, cue_end in _find_cues(low, _STRONG_CUES):
        hit = _first_in_window(text, cue_end, mentions)
        if hit is not None and (best is None or cue_start >= best[0]):
            best = (cue_start, hit.key)
    for m in mentions:
        if (
            m.kind != "bare"
            and _CORRECT_AFTER.match(text[m.end : m.end + 50])
            and not _negated(text, m)
            and (best is None or m.start >= best[0])
        ):
            best = (m.start, m.key)
    if best is not None:
        return best[1], "statement"
    # 2. conclusions.
    for cue_start, cue_end in _find_cues(low, _CONCLUSION_CUES):
        hit = _first_in_window(text, cue_end, mentions)
        if hit is not None and (hit.kind != "bare" or hit.start - cue_end < 4):
            if hit.weak and not _standalone(text, hit) and hit.start - cue_end > 4:
                continue
            best = (cue_start, hit.key)
    if best is not None:
        return best[1], "conclusion"
    # 3. the beginning of the response.
    lead = _LEAD_PREFIX.match(text)
    begin = lead.end() if lead else len(text) - len(text.lstrip())
    first = mentions[0]
    if first.start <= begin + 1 and not _negated(text, first):
        follow = text[first.end : first.end + 3]
        if not first.weak or re.match(r"^\s*(?:[,.!;:)\]]|-\s|$|\n)", follow):
            return first.key, "beginning"
    usable = [m for m in mentions if m.kind != "bare" and not _negated(text, m)]
    # 4. assertions: "the review is positive", "the statement is false".
    asserted = [
        m
        for m in usable
        if (_WEAK_ASSERT if m.weak else _ASSERT_BEFORE).search(text[max(0, m.start - 60) : m.start])
    ]
    if asserted:
        return asserted[-1].key, "assertion"
    usable = [m for m in usable if not m.weak or _standalone(text, m)]
    # 5. the only candidate mentioned; then the only one in the last sentence mentioning any.
    keys = {m.key for m in usable}
    if len(keys) == 1:
        return usable[0].key, "unique"
    if usable:
        s_start, s_end = _sentence_bounds(text, usable[-1].start)
        last = {m.key for m in usable if s_start <= m.start <= s_end}
        if len(last) == 1:
            return usable[-1].key, "last_sentence"
    # 6. two choices and one is denied: "This statement is not true." -> false.
    if len(cands.texts) == 2 and not usable:
        denied = {
            m.key
            for m in mentions
            if m.kind == "text" and _NOT_ASSERT.search(text[max(0, m.start - 40) : m.start])
        }
        if len(denied) == 1:
            return 1 - denied.pop(), "denied_other"
    return None


def _numbers_in(text: str, words: bool = False) -> list[tuple[int, float]]:
    """Numbers in digits; with ``words`` also spelled-out ones (slower: only short texts and windows)."""
    out = _scan_numbers(text)
    if words:
        out = sorted(out + _number_words(text))
    return out


def _window_number(
    text: str, start: int, numbers: list[tuple[int, float]], given: frozenset[float] = frozenset()
) -> float | None:
    _, end = _sentence_bounds(text, start)
    if end <= start:
        end = start + 1
    # Decimals like "3.5" are not sentence ends; re-extend past them.
    while end < len(text) and text[end] == "." and end + 1 < len(text) and text[end + 1].isdigit():
        nxt = _SENTENCE_END.search(text, end + 1)
        end = nxt.start() if nxt else len(text)
    end = min(end, start + 200)
    lo = bisect_left(numbers, (start, -math.inf))
    hi = bisect_left(numbers, (end, -math.inf))
    inside = numbers[lo:hi]
    if not inside:
        inside = _number_words(text, start, end)  # "The answer is twelve."
    if not inside:
        return None
    # Quantities given in the question ("so 3 spiders have 24 legs") are rarely the answer.
    new = [(p, v) for p, v in inside if v not in given]
    inside = new or inside
    eq = text.rfind("=", start, end)
    if eq >= 0:
        after = [(p, v) for p, v in inside if p > eq]
        if after:
            return after[0][1]
    return inside[0][1]


def _final_number(text: str, question: str = "") -> tuple[float, str] | None:
    numbers = _numbers_in(text)
    given = frozenset(v for _, v in _numbers_in(_clean(question)))
    best: tuple[int, float] | None = None
    low = _lower(text)
    for cue_start, cue_end in _find_cues(low, _STRONG_CUES):
        v = _window_number(text, cue_end, numbers, given)
        if v is not None:
            best = (cue_start, v)
    if best is not None:
        return best[1], "statement"
    for cue_start, cue_end in _find_cues(low, _CONCLUSION_CUES):
        v = _window_number(text, cue_end, numbers, given)
        if v is not None:
            best = (cue_start, v)
    if best is not None:
        return best[1], "conclusion"
    lead = _LEAD_PREFIX.match(text)
    begin = lead.end() if lead else len(text) - len(text.lstrip())
    first_line = text[begin:].split("\n", 1)[0]
    if numbers and numbers[0][0] <= begin + 1 and len(first_line.split()) <= 3:
        return numbers[0][1], "beginning"
    return None


def _norm_words(text: str) -> str:
    return " ".join(_content_words(text))


def _has_words(got: str, want: str) -> bool:
    """``want`` occurs in ``got`` as whole words; both are single-space-joined words (``_norm_words``).

    A substring test, not a regex: a pattern per target would be compiled for nearly every row.
    """
    return f" {want} " in f" {got} "


@lru_cache(maxsize=1 << 12)
def _negated_phrase(want: str) -> re.Pattern[str]:
    """ "not ``want``" (one optional word between)."""
    return re.compile(rf"\bnot\s+(?:\w+\s+)?{re.escape(want)}")


def _check_phrase(text: str, target: Target) -> Verdict:
    want = _norm_words(target.answer)
    want_set = set(want.split())
    statement: str | None = None
    for _, cue_end in _find_cues(_lower(text), _STRONG_CUES):
        _, end = _sentence_bounds(text, cue_end)
        window = text[cue_end : max(end, cue_end)]
        if _content_words(window):
            statement = window
    if statement is not None:
        got = _norm_words(statement)
        if _has_words(got, want) and not ("not " in got and _negated_phrase(want).search(got)):
            return Verdict(True, target, statement.strip(), "statement")
        got_set = set(got.split())
        if not want_set & got_set:
            return Verdict(False, target, statement.strip(), "statement")
        if got_set and got_set <= want_set and len(got_set) <= 3:  # "Answer: Leonardo." for da Vinci
            return Verdict(True, target, statement.strip(), "statement")
        return Verdict(None, target, statement.strip(), "statement")
    low = _clean(text).lower()  # _norm(text) before its whitespace and ends are tidied: the same words
    if want and not all(w in low for w in want_set):
        # A word of the target is nowhere in the text, so it cannot contain the target; only the short
        # response rule is left, which wants at most 4 words: the first 5 decide, not the whole answer.
        first = _first_content_words(low, 5)
        if len(first) == 5:
            return Verdict(None, target, None, "no_answer")
        got = " ".join(first)  # == _norm_words(text): these are all its words
    else:
        got = _norm_words(text)
    if _has_words(got, want):
        return Verdict(True, target, target.answer, "contains")
    if got and len(got.split()) <= min(4, len(want_set) + 2) and not want_set & set(got.split()):
        return Verdict(False, target, text.strip(), "short_response")
    return Verdict(None, target, None, "no_answer")
