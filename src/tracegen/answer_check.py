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
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from .records import Record

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

TargetKind = Literal["option", "number", "label", "phrase"]
Kind = Literal["text", "label", "bare"]

MAX_PHRASE_WORDS = 5
"""A target of more words that is not an option is not a short answer (None)."""
MAX_OPTION_WORDS = 25
"""Option texts longer than this are not matched verbatim (T0 sometimes lists whole sentences)."""


# ---- text helpers ------------------------------------------------------------------------------------------
_QUOTES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2212": "-", "\u2013": "-", "\u00a0": " "}
)
_MARKDOWN = re.compile(r"\*\*|__|`|\\\(|\\\)|\\\[|\\\]")
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_ARTICLES = {"a", "an", "the"}
_WORDS = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")


def _clean(text: str) -> str:
    """NFKC, straight quotes, no markdown emphasis; LaTeX answers made plain. Case is kept."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    text = _BOXED.sub(lambda m: f" the answer is {m.group(1)}. ", text)
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    text = text.replace("\\$", "$").replace("\\%", "%").replace("\\text", "")
    return _MARKDOWN.sub("", text)


@lru_cache(maxsize=1 << 16)
def _norm(text: str) -> str:
    """Comparable form of a short answer: lower case, outer punctuation and quotes gone, spaces collapsed."""
    text = _clean(text).lower()
    text = " ".join(text.split())
    return text.strip(" \t\n.,;:!?\"'()[]{}*-")


def _content_words(text: str) -> list[str]:
    return [w for w in _WORDS.findall(_norm(text)) if w not in _ARTICLES]


# ---- options -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Option:
    """One answer option listed in the question: its label as written ("A", "b", "2", "iii") or None for a
    bullet, and its text."""

    label: str | None
    text: str


_ROMAN_LOWER = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x"]
_ROMAN_UPPER = [r.upper() for r in _ROMAN_LOWER]
_SEQUENCES: list[list[str]] = [
    list("ABCDEFGHIJ"),
    list("abcdefghij"),
    [str(i) for i in range(1, 13)],
    _ROMAN_LOWER,
    _ROMAN_UPPER,
]
_MARKER = re.compile(
    r"(?:^|(?<=[\s:]))"
    r"(?P<open>[(\[]?)(?P<lab>[A-Ja-j]|1[0-2]|[1-9]|(?:viii|vii|iii|ii|iv|vi|ix|i|v|x)|"
    r"(?:VIII|VII|III|II|IV|VI|IX|I|V|X))(?P<close>[)\].:]?\.?)(?=[ \t]+\S)"
)
_BULLET = re.compile(r"^\s*(?:[-+*\u2022]|--)\s+(?P<text>\S.*?)\s*$")
_ANSWER_PROMPT = re.compile(r"^(?:\S+(?:\s+\S+){0,3}|.*:|(?:A|Answer|Output|Solution)\s*:.*)$")
_OPTIONS_HEADER = re.compile(
    r"(?:option|choice|choose|select|pick|answers?\b|possible|available|candidates)[^\n]{0,40}[:.?]?\s*$",
    re.IGNORECASE,
)


_TEMPLATE_TAIL = re.compile(
    r"\s+(?=(?:Let's|Let us|Think|Step|Stream|Now|Some|Please|Explanation|Answer|Hmm|First|Solve|Give|"
    r"Choose|Pick|Before|Be accurate|Q:|A:|So|Output|Rationale|Reasoning|Thinking)\b)"
)


def _trim_last_option(text: str) -> str:
    """The last option of a FLAN CoT template often runs into the template's closing words
    ("(E) 60 Let's think step by step."); cut them off."""
    m = _TEMPLATE_TAIL.search(text)
    if m and m.start() > 0:
        return text[: m.start()]
    m = re.search(r"[.!?]\s+(?=[A-Z])", text)
    if m and len(text[: m.start()].split()) <= 6:
        return text[: m.start()]
    return text


def _enumerated_options(question: str) -> tuple[int, list[Option]]:
    """The last run of consistently styled markers A, B, C... (or a, b / 1, 2 / i, ii), with texts."""
    markers = [
        m for m in _MARKER.finditer(question) if m.group("open") or m.group("close")
    ]  # a bare "A" is not a marker
    best: tuple[int, list[Option]] = (-1, [])
    i = 0
    while i < len(markers):
        m = markers[i]
        lab = m.group("lab")
        for seq in _SEQUENCES:
            if seq[0] != lab:
                continue
            style = (m.group("open"), m.group("close"))
            run = [m]
            j = i + 1
            while j < len(markers) and len(run) < len(seq):
                n = markers[j]
                if n.group("lab") == seq[len(run)] and (n.group("open"), n.group("close")) == style:
                    run.append(n)
                elif n.group("lab") == seq[0] and (n.group("open"), n.group("close")) == style:
                    break  # a new run starts
                j += 1
            if len(run) >= 2:
                opts: list[Option] = []
                for k, mk in enumerate(run):
                    end = run[k + 1].start() if k + 1 < len(run) else len(question)
                    text = question[mk.end() : end]
                    if k + 1 == len(run) or "\n" in text.strip():
                        text = text.strip().split("\n", 1)[0]
                    if k + 1 == len(run):
                        text = _trim_last_option(text)
                    opts.append(Option(mk.group("lab"), text.strip()))
                if run[0].start() >= best[0] and all(o.text for o in opts):
                    best = (run[0].start(), opts)
        i += 1
    return best


def _bulleted_options(question: str) -> tuple[int, list[Option]]:
    """The last block of >= 2 bullet lines that follows an options header or ends the question."""
    lines = question.split("\n")
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    best: tuple[int, list[Option]] = (-1, [])
    i = 0
    while i < len(lines):
        if not _BULLET.match(lines[i]):
            i += 1
            continue
        j = i
        items = []
        while j < len(lines) and (m := _BULLET.match(lines[j])):
            items.append(m.group("text"))
            j += 1
        items[-1] = _trim_last_option(items[-1])
        header = i > 0 and bool(_OPTIONS_HEADER.search(lines[i - 1]))
        header = header or (
            i > 0 and lines[i - 1].strip() == "" and i > 1 and bool(_OPTIONS_HEADER.search(lines[i - 2]))
        )
        rest = [ln.strip() for ln in lines[j:] if ln.strip()]
        at_end = not rest or (len(rest) == 1 and bool(_ANSWER_PROMPT.match(rest[0])))
        if len(items) >= 2 and (header or at_end) and offsets[i] >= best[0]:
            best = (offsets[i], [Option(None, t) for t in items])
        i = j
    return best


def parse_options(question: str) -> list[Option]:
    """The answer options listed in a FLAN question (the last list if there are several), or []."""
    text = _clean(question)
    pos_e, enumerated = _enumerated_options(text)
    pos_b, bulleted = _bulleted_options(text)
    if pos_b > pos_e:
        return bulleted
    return enumerated


# ---- label families and synonyms ---------------------------------------------------------------------------
_CANNOT_TELL = [
    "it is not possible to tell",
    "not possible to tell",
    "it's impossible to say",
    "impossible to say",
    "impossible to tell",
    "cannot be determined",
    "can't be determined",
    "can not be determined",
    "cannot tell",
    "can't tell",
    "can not tell",
    "cannot be concluded",
    "can't be concluded",
    "not possible to determine",
    "impossible to determine",
    "cannot determine",
    "can't determine",
    "it is unclear",
    "neutral",
]
_SYNONYMS: list[list[str]] = [
    _CANNOT_TELL,
    ["entailment", "entails", "entailed"],
    ["contradiction", "contradicts", "contradictory", "contradicted"],
    [
        "not_entailment",
        "not entailment",
        "not entailed",
        "does not entail",
        "doesn't entail",
        "no entailment",
    ],
]
_SYNONYM_OF: dict[str, list[str]] = {s: group for group in _SYNONYMS for s in group}
_TARGET_ALIASES = {
    "pos": "positive",
    "neg": "negative",
    "not entailment": "not_entailment",
    "non-entailment": "not_entailment",
    "it's not possible to tell": "it is not possible to tell",
}
_FAMILIES: list[list[str]] = [
    ["yes", "no"],
    ["true", "false"],
    ["positive", "negative", "neutral"],
    ["positive", "negative"],
    ["entailment", "neutral", "contradiction"],
    ["entailment", "not_entailment"],
    ["acceptable", "unacceptable"],
    ["correct", "incorrect"],
]
_WEAK_WORDS = frozenset(
    [
        "yes",
        "no",
        "true",
        "false",
        "maybe",
        "none",
        "both",
        "neither",
        "all",
        "correct",
        "incorrect",
        "right",
        "wrong",
        "it",
        "he",
        "she",
        "they",
        "one",
        "two",
    ]
)
_NLI_HINT = re.compile(r"hypothesis|premise|entail", re.IGNORECASE)


def _surfaces(text: str) -> list[str]:
    base = _norm(text)
    return _SYNONYM_OF.get(base, [base])


def _is_weak(text: str) -> bool:
    t = _norm(text)
    return t in _WEAK_WORDS or len(t) <= 2 or bool(_NUMBER_ONLY.fullmatch(t))


# ---- targets -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """What the response is compared with."""

    kind: TargetKind
    answer: str
    """Canonical answer text (option text, label, number as written, phrase)."""
    choices: tuple[str, ...] = ()
    """Option texts (kind option) or family labels (kind label); the answer is one of them."""
    labels: tuple[str | None, ...] = ()
    """Option labels, parallel to ``choices`` (kind option)."""
    value: float | None = None
    """Numeric value (kind number)."""


_STATEMENT_IN_TARGET = re.compile(
    r"(?:answer\s*(?:is|:)|####|answer would be)\s*:?\s*(?P<ans>[^\n]{1,80}?)\s*(?:\.(?:\s|$)|\n|$)",
    re.IGNORECASE,
)
_OPENING_LABEL = re.compile(
    r"^(yes|no|true|false|positive|negative|neutral|entailment|contradiction)\s*[;,.:!\n]", re.IGNORECASE
)
_LABEL_TARGET = re.compile(
    r"^[(\[]?(?P<lab>[A-Ja-j]|1[0-2]|[1-9]|(?:viii|vii|iii|ii|iv|vi|ix|i|v|x)|(?:VIII|VII|III|II|IV|VI|IX|I|V|X))"
    r"[)\].:]?\.?(?:\s+(?P<rest>.*))?$",
    re.DOTALL,
)


def _option_index(target: str, options: list[Option]) -> int | None:
    t = _TARGET_ALIASES.get(_norm(target), _norm(target))
    texts = [_norm(o.text) for o in options]
    if t in texts:
        return texts.index(t)
    m = _LABEL_TARGET.match(target.strip())
    if m:
        lab = m.group("lab")
        for i, o in enumerate(options):
            if o.label is not None and o.label.lower() == lab.lower():
                rest = _norm(m.group("rest") or "")
                if not rest or rest == texts[i] or texts[i].startswith(rest) or rest.startswith(texts[i]):
                    return i
    # The last option sometimes runs into the template's closing words ("- no Let's think first.").
    if texts and t and texts[-1].startswith(t + " "):
        return len(texts) - 1
    return None


def _short_target(target: str) -> str:
    """A long CoT target ending in "So the answer is X." is reduced to X; other targets stay as they are."""
    t = target.strip()
    if len(t.split()) <= MAX_PHRASE_WORDS:
        return t
    found = list(_STATEMENT_IN_TARGET.finditer(_clean(t)))
    if found:
        return found[-1].group("ans").strip()
    return t


def resolve_target(question: str, target: str) -> Target | None:
    """Classify FLAN's target as a short answer, or None when it is not one (long text, empty)."""
    if not target or not target.strip():
        return None
    options = [o for o in parse_options(question) if len(o.text.split()) <= MAX_OPTION_WORDS]
    short = _short_target(target)
    first_line = target.strip().split("\n", 1)[0]
    if options:
        for cand in (target, short, first_line):
            idx = _option_index(cand, options)
            if idx is not None:
                return Target(
                    "option",
                    options[idx].text,
                    tuple(o.text for o in options),
                    tuple(o.label for o in options),
                )
    t = _TARGET_ALIASES.get(_norm(short), _norm(short))
    opening = _OPENING_LABEL.match(target.strip())
    if opening and len(target.split()) > MAX_PHRASE_WORDS:
        t = short = opening.group(1).lower()  # "No; a sleeping man is not awake because ..."
    value = _parse_number(short)
    if value is not None:
        return Target("number", short.strip().rstrip("."), value=value)
    nli = bool(_NLI_HINT.search(question))
    for family in _FAMILIES:
        if t in family:
            if t in ("positive", "negative") and "neutral" in family and "neutral" not in question.lower():
                continue
            if t == "neutral" and ("entailment" in family) != nli:
                continue
            if t == "entailment" and "neutral" in family and "not_entailment" in question.lower():
                continue
            return Target("label", t, tuple(family))
    words = _content_words(short)
    if 0 < len(short.split()) <= MAX_PHRASE_WORDS and words:
        return Target("phrase", short.strip().rstrip("."))
    return None


# ---- numbers -----------------------------------------------------------------------------------------------
# Numbers are found from their first digit (a pattern that starts with \d lets ``re`` skip non-digits fast);
# sign, "$" and word boundaries are checked by hand around the match.
_DIGITS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_FRACTION_TAIL = re.compile(r"\s*/\s*(\d+)(?!\d|\.\d)")
_GLUED_DIGIT = re.compile(r"\w*\d")
_WORDISH = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)?")
_NUMBER_ONLY = re.compile(r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:\s*/\s*\d+)?\s*%?")
_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)}
_NUMBER_WORDS.update({t: 20 + 10 * i for i, t in enumerate(_TENS)})
_NUMBER_WORDS.update(
    {f"{t}-{u}": 20 + 10 * i + j for i, t in enumerate(_TENS) for j, u in enumerate(_UNITS[1:10], start=1)}
)
_UNIT_TAIL = re.compile(r"^(?P<num>[-$\d.,/\s]+?)\s*(?:%|[a-z][a-z .]*)?$")


def _parse_number(text: str) -> float | None:
    """The value of a target that is only a number (units after it allowed: "18 dollars", "25%")."""
    t = text.strip().lower().rstrip(".")
    if t in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[t])
    m = _UNIT_TAIL.match(t)
    if not m or not re.search(r"\d", m.group("num")):
        return None
    nums = _scan_numbers(m.group("num"))
    if len(nums) != 1:
        return None
    rest = t[m.end("num") :].strip()
    if rest and len(rest.split()) > 2:
        return None
    return nums[0][1]


def _boundary_before(text: str, pos: int) -> bool:
    """True when nothing glues a number to what precedes ``pos`` (a letter, digit, "_", ".", ",", "/")."""
    if pos == 0:
        return True
    c = text[pos - 1]
    return not (c.isalnum() or c in "_.,/")


def _scan_numbers(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, float]]:
    """(offset, value) of the numbers in ``text[start:end]``: "-3", "$1,234.50", "3/4", "25" of "25%"."""
    out: list[tuple[int, float]] = []
    for m in _DIGITS.finditer(text, start, len(text) if end is None else end):
        p, e = m.span()
        if p and text[p - 1] == "$":
            p -= 1
        sign = False
        if p and text[p - 1] == "-" and _boundary_before(text, p - 1):
            sign = True
            p -= 1
        if not sign and not _boundary_before(text, p):
            continue
        try:
            value = float(m.group().replace(",", ""))
        except ValueError:
            continue
        frac = _FRACTION_TAIL.match(text, e)
        if frac is not None:
            den = float(frac.group(1))
            if den == 0:
                continue
            value /= den
            e = frac.end()
        if _GLUED_DIGIT.match(text, e):  # "2x3", "4th5": not a number on its own
            continue
        out.append((p, -value if sign else value))
    return out


def _number_words(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, float]]:
    """(offset, value) of "twelve", "seventy-two" ... in ``text[start:end]``."""
    out: list[tuple[int, float]] = []
    for m in _WORDISH.finditer(text, start, len(text) if end is None else end):
        value = _NUMBER_WORDS.get(m.group().lower())
        if value is not None:
            out.append((m.start(), float(value)))
    return out


def _same_number(got: float, want: float, want_text: str) -> bool:
    if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
        return True
    decimals = len(want_text.split(".", 1)[1]) if "." in want_text and "/" not in want_text else 0
    return decimals > 0 and round(got, decimals) == round(want, decimals)


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


def _rule(pattern: str, before: _Before = "word", word_after: bool = False) -> _Rule:
    return _Rule(re.compile(pattern), before, word_after)


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
    return sorted(hit for rule in rules for hit in _hits(rule, low))


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
        r"should\s+be|will\s+be|must\s+be|would\s+have\s+to\s+be|here\s+is|becomes)\b\s*:?|:|=|-(?=\s))"
    ),
    _rule(r"option\s*(?:is|would\s+be|should\s+be|:)"),
    _rule(r"choice\s*(?:is|would\s+be|should\s+be|:)"),
    _rule(r"i\s+(?:would\s+|will\s+|'d\s+)?(?:choose|pick|select|go\s+with)\b"),
    *(_rule(rf"{w}\b[^.\n]{{0,40}}?\b(?:is|would\s+be|should\s+be|:)") for w in _VERDICT_WORDS),
    _rule(r"####", before="none"),
)
_CONCLUSION_CUES: tuple[_Rule, ...] = (
    *(_rule(rf"{w}\b\s*,?", before="sentence") for w in ("so", "hence", "thus")),
    *(
        _rule(rf"{w}\b\s*[:,]?")
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
    got = _norm_words(text)
    if _has_words(got, want):
        return Verdict(True, target, target.answer, "contains")
    if got and len(got.split()) <= min(4, len(want_set) + 2) and not want_set & set(got.split()):
        return Verdict(False, target, text.strip(), "short_response")
    return Verdict(None, target, None, "no_answer")


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
