"""What the answer check compares against: the question's options, label families and the short target
(:func:`parse_options`, :func:`resolve_target`); the text normalisation every part of the check shares.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .answer_check_numbers import _NUMBER_ONLY, _parse_number

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
    # Each step runs only when its input can change: NFKC and the quote table leave ASCII as it is, and the
    # LaTeX patterns and replacements all start with a backslash (str.isascii and `in` are C-speed scans).
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    if "\\" in text:
        text = _BOXED.sub(lambda m: f" the answer is {m.group(1)}. ", text)
        text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
        text = text.replace("\\$", "$").replace("\\%", "%").replace("\\text", "")
    if "*" in text or "_" in text or "`" in text or "\\" in text:  # what _MARKDOWN can match starts so
        text = _MARKDOWN.sub("", text)
    return text


@lru_cache(maxsize=1 << 16)
def _norm(text: str) -> str:
    """Comparable form of a short answer: lower case, outer punctuation and quotes gone, spaces collapsed."""
    text = _clean(text).lower()
    text = " ".join(text.split())
    return text.strip(" \t\n.,;:!?\"'()[]{}*-")


def _content_words(text: str) -> list[str]:
    return [w for w in _WORDS.findall(_norm(text)) if w not in _ARTICLES]


def _first_content_words(low: str, limit: int) -> list[str]:
    """The first ``limit`` words of ``_content_words(text)`` (all of them when it has fewer), found without
    cutting the whole text into words. ``low`` is ``_norm(text)`` or ``_clean(text).lower()``: they hold the
    same words, as ``_norm`` only collapses whitespace and strips non-alphanumerics off the ends, and a word
    neither holds whitespace nor starts or ends with anything but a letter or digit."""
    out: list[str] = []
    for m in _WORDS.finditer(low):
        word = m.group()
        if word not in _ARTICLES:
            out.append(word)
            if len(out) == limit:
                break
    return out


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


_LABELS = frozenset(lab for seq in _SEQUENCES for lab in seq)  # every label _MARKER accepts
_LAB_CHARS = frozenset("".join(_LABELS))
_CLOSE_THEN_GAP = re.compile(r"[)\].:][. \t]")


def _may_have_markers(question: str) -> bool:
    """False only when ``question`` holds no _MARKER match with an opening or closing mark (most prompts).

    Such a marker has "(" or "[", or its closing mark starts with one of ``).:]`` followed by "." or a blank
    (the look-ahead wants blanks after the mark), right after its label, which begins the text or follows
    whitespace or a colon: so the label is the whole run of label characters before the mark. A scan for
    those two characters, then a look at the few before, replaces the regex's attempt at every position.
    """
    if "(" in question or "[" in question:
        return True
    for m in _CLOSE_THEN_GAP.finditer(question):
        end = k = m.start()
        while k > 0 and end - k < 5 and question[k - 1] in _LAB_CHARS:
            k -= 1
        if question[k:end] in _LABELS and (k == 0 or question[k - 1].isspace() or question[k - 1] == ":"):
            return True
    return False


def _enumerated_options(question: str) -> tuple[int, list[Option]]:
    """The last run of consistently styled markers A, B, C... (or a, b / 1, 2 / i, ii), with texts."""
    if not _may_have_markers(question):
        return -1, []
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
    if "-" not in question and "*" not in question and "+" not in question and "\u2022" not in question:
        return -1, []  # no bullet character, no bullet line (_BULLET)
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
_FAMILY_LABELS = frozenset(label for family in _FAMILIES for label in family)
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


def _option_index(target: str, options: list[Option], texts: list[str]) -> int | None:
    """Which option ``target`` names; ``texts`` are the options' ``_norm`` texts."""
    t = _TARGET_ALIASES.get(_norm(target), _norm(target))
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


def _names_no_option(question: str, candidates: tuple[str, ...]) -> bool:
    """True only when no candidate can name an option of ``question`` (:func:`_option_index` finds none
    whatever the options), so they need not be parsed; False when unsure.

    Sure for a plain question: ASCII without ``\\``, ``*``, ``_`` or a backtick, which ``_clean`` leaves as
    it is (so an option is a piece of the question, and its ``_norm`` text a substring of the question
    lowered with its blanks collapsed). A candidate names an option by that text (its own ``_norm`` text,
    alias applied, equal to an option's or starting the last one's) or by a label; so one whose text is not
    in the question, nor empty, nor a label, names none.
    """
    if not question.isascii() or "\\" in question or "*" in question or "_" in question or "`" in question:
        return False
    lowered = " ".join(question.lower().split())
    for cand in candidates:
        t = _TARGET_ALIASES.get(_norm(cand), _norm(cand))
        if not t or t in lowered or _LABEL_TARGET.match(cand.strip()):
            return False
    return True


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
    short = _short_target(target)
    first_line = target.strip().split("\n", 1)[0]
    options: list[Option] = []
    if not _names_no_option(question, (target, short, first_line)):
        options = [o for o in parse_options(question) if len(o.text.split()) <= MAX_OPTION_WORDS]
    if options:
        texts = [_norm(o.text) for o in options]
        for cand in (target, short, first_line):
            idx = _option_index(cand, options, texts)
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
    if t in _FAMILY_LABELS:  # (most targets are not: skip the families and the NLI hint)
        nli = bool(_NLI_HINT.search(question))
        for family in _FAMILIES:
            if t in family:
                if (
                    t in ("positive", "negative")
                    and "neutral" in family
                    and "neutral" not in question.lower()
                ):
                    continue
                if t == "neutral" and ("entailment" in family) != nli:
                    continue
                if t == "entailment" and "neutral" in family and "not_entailment" in question.lower():
                    continue
                return Target("label", t, tuple(family))
    if 0 < len(short.split()) <= MAX_PHRASE_WORDS and _content_words(short):
        return Target("phrase", short.strip().rstrip("."))
    return None
