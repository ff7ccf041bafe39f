"""Quality filters: a small base class owns nothing but the verdict; :class:`FilterPipeline` owns the loop.

Shaped after datatrove's ``BaseFilter``: a concrete filter answers one question, "keep this record?", and when
not, why (:class:`Rejection`: a reason and a detail). The pipeline threads an iterator of records through a
list of filters, yields the kept ones, calls ``on_reject(record, "filter", reason, detail)`` for the others
and counts drops by reason (``FilterPipeline.counts``, for ``stats.json`` and the dataset card). A record is
rejected by the first filter that objects, so each drop is counted once.

Defaults follow OpenOrca's published cleaning (see ../shared/ORCA.md) unless noted:

==========================  =======  =====================================================================
filter (reason)             default  rule
==========================  =======  =====================================================================
empty                       on       response missing or only whitespace (always, system message or not)
too_short                   on       ``len(response.strip()) < 10`` when a system message was set (OpenOrca);
                                     ``min_chars_only_with_system=False`` applies it to every row
truncated                   on       ``finish_reason == "length"``: the teacher hit max_tokens mid-answer
refusal                     on       contains a phrase of ``prompts/refusals.yaml`` (OpenOrca/Dolphin style)
not_enough_information      on       contains "not enough information" (OpenOrca), case-insensitive
asks_question               on       response (right-stripped) ends with "?" and the question contains
                                     none of ``asks_question_exempt_markers`` (default "question" and "?",
                                     case-insensitive). OpenOrca's rule checked "question" only; "?" is
                                     added so translations/rewrites of questions are kept. Set the markers
                                     to ``["question"]`` for OpenOrca's exact rule.
answer_disagrees            off      ``agrees_with_target is False`` (answer check, SlimOrca's idea done
                                     offline; the record must have been annotated, see answer_check.py)
==========================  =======  =====================================================================
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .._resources import prompt_path
from .._syntax import load_yaml, syntax_error_line
from ..clean_config import FilterConfig
from ..errors import ConfigError
from ..records import Record

__all__ = [
    "AnswerDisagreesFilter",
    "AsksQuestionFilter",
    "EmptyFilter",
    "Filter",
    "FilterConfig",
    "FilterPipeline",
    "NotEnoughInformationFilter",
    "OnReject",
    "PhraseMatcher",
    "RefusalFilter",
    "RefusalList",
    "Rejection",
    "TruncatedFilter",
    "build_filters",
    "load_refusals",
]

OnReject = Callable[[Record, str, str, str], None]
"""``on_reject(record, stage, reason, detail)``: called once per dropped record."""

REFUSALS_FILE = "refusals.yaml"


# ---- refusal phrase list (validated data) ------------------------------------------------------------------
class RefusalList(BaseModel):
    """``prompts/refusals.yaml``: groups of phrases; unknown keys and duplicate phrases are rejected."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1]
    description: str = ""
    groups: dict[str, list[str]]

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        if not groups:
            raise ValueError("at least one group of phrases is required")
        seen: dict[str, str] = {}
        for group, phrases in groups.items():
            if not phrases:
                raise ValueError(f"group {group!r} is empty")
            for phrase in phrases:
                if len(phrase.strip()) < 3:
                    raise ValueError(f"group {group!r}: phrase {phrase!r} is shorter than 3 characters")
                norm = _normalize_for_match(phrase)
                if norm in seen:
                    raise ValueError(f"phrase {phrase!r} is listed twice (groups {seen[norm]!r}, {group!r})")
                seen[norm] = group
        return groups

    def phrases(self) -> list[tuple[str, str]]:
        """(group, phrase) pairs in file order."""
        return [(g, p) for g, ps in self.groups.items() for p in ps]


def load_refusals(path: str | Path | None = None) -> RefusalList:
    """Load and validate a refusal list (default: the maintained ``prompts/refusals.yaml``)."""
    file = Path(path) if path is not None else prompt_path(REFUSALS_FILE)
    try:
        data = load_yaml(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{file}: cannot read refusal list ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ConfigError(syntax_error_line(file, e)) from None
    try:
        return RefusalList.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise ConfigError(f"{file}: {where}: {err['msg']} (fix the refusal list)") from None


# ---- phrase matching ---------------------------------------------------------------------------------------
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@functools.lru_cache(maxsize=8)
def _lowered(text: str) -> str:
    """``text`` as the phrase matchers search it (each filter asks for the same answer: done once)."""
    if text.isascii():  # str.translate is slow, and the apostrophes it maps are not ASCII
        return text.lower()
    return text.translate(_APOSTROPHES).lower()


_WORD = re.compile(r"[a-z0-9]+")
# Every byte but ASCII a-z and 0-9 becomes a space: splitting the result gives the [a-z0-9]+ runs of a text
# (in UTF-8 a non-ASCII character is bytes >= 0x80 only, so it separates runs just as in the str).
_RUN_BYTES = bytes(c if 0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 else 0x20 for c in range(256))


@functools.lru_cache(maxsize=8)
def _runs(text: str) -> list[bytes]:
    """The ``[a-z0-9]+`` runs of ``_lowered(text)`` (== ``_WORD.findall(...)``, as bytes), computed once."""
    low = _lowered(text).encode("utf-8", "surrogatepass")
    return low.translate(_RUN_BYTES).split()


def _normalize_for_match(text: str) -> str:
    return " ".join(text.translate(_APOSTROPHES).lower().split())


_FEW_ANCHORS = 4


class PhraseMatcher:
    """Case-insensitive search for any of many phrases, fast on texts that contain none of them.

    Phrases are grouped under a few anchor words (a greedy set cover that avoids very common words); only the
    phrases of anchors that occur in a text are matched with their own regex (whitespace-tolerant; a word
    boundary is checked by hand at alphanumeric edges, because a leading ``\\b`` disables ``re``'s
    literal-prefix scan). One huge alternation regex would be ~100x slower: ``re`` tries it branch by branch
    at every position.

    Which anchors occur is one set intersection with the text's ``[a-z0-9]+`` runs (:func:`_runs`, cut in C
    and shared by every matcher asking about the same text) instead of a substring scan per anchor. It finds
    every anchor a phrase match needs: an anchor is a maximal ``[a-z0-9]+`` run of its phrases, and a match
    that passes the edge checks has no ``[a-z0-9]`` character right before or after it, so the anchor is a
    maximal run of the text as well. Anchors that are not such runs (a phrase without letters or digits), and
    the anchors of a matcher with only a few, are still scanned for with ``in``.
    """

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        entries: list[tuple[str, str, str]] = []  # (normalized, label, original)
        for label, phrase in phrases:
            norm = _normalize_for_match(phrase)
            if norm:
                entries.append((norm, label, phrase))
        self.size = len(entries)
        # anchor -> (regex source, check the start boundary?, the end boundary?, label, phrase); the regex is
        # compiled when its anchor first occurs in a text (most never do: ~110 compiles saved per run)
        self._by_anchor: dict[str, list[tuple[str, bool, bool, str, str]]] = {}
        for anchor, members in _anchor_cover([e[0] for e in entries]).items():
            for i in members:
                norm, label, phrase = entries[i]
                body = r"\s+".join(re.escape(tok) for tok in norm.split(" "))
                rule = (body, norm[0].isalnum(), norm[-1].isalnum(), label, phrase)
                self._by_anchor.setdefault(anchor, []).append(rule)
        # Longest anchors first: they are the rarest and the fastest to scan for.
        self._anchors = sorted(self._by_anchor, key=len, reverse=True)
        # (anchor, its bytes when it is an [a-z0-9]+ run, else None: found by a substring scan)
        self._order = [(a, a.encode() if _WORD.fullmatch(a) else None) for a in self._anchors]
        self._run_anchors = frozenset(run for _, run in self._order if run is not None)
        self._scan_all = len(self._run_anchors) < len(self._anchors)
        # A few substring scans cost less than cutting the text into runs (the not-enough-information list).
        self._few = len(self._anchors) <= _FEW_ANCHORS

    def search(self, text: str) -> tuple[str, str] | None:
        """First (label, phrase) found in ``text`` (in anchor order), or None."""
        low = _lowered(text)
        present = None if self._few else self._run_anchors.intersection(_runs(text))
        if present is not None and not present and not self._scan_all:
            return None  # the common case: no anchor at all
        for anchor, run in self._order:
            found = run in present if run is not None and present is not None else anchor in low
            if not found:
                continue
            for body, bound_start, bound_end, label, phrase in self._by_anchor[anchor]:
                for m in re.compile(body).finditer(low):  # re caches compiled patterns
                    start, end = m.span()
                    if bound_start and start > 0 and low[start - 1].isalnum():
                        continue
                    if bound_end and end < len(low) and low[end].isalnum():
                        continue
                    return label, phrase
        return None


# Words too common to be good anchors: they occur in most answers, so scanning for them finds nothing useful.
_COMMON = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "was",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "have",
        "has",
        "had",
        "just",
        "only",
        "that",
        "this",
        "with",
        "from",
        "your",
        "our",
        "their",
        "they",
        "them",
        "what",
        "when",
        "will",
        "would",
        "could",
        "should",
        "about",
        "into",
        "than",
        "then",
        "there",
        "here",
        "been",
        "being",
        "also",
        "which",
        "who",
        "its",
        "it's",
        "i'm",
        "don't",
        "can't",
        "do",
        "does",
        "did",
        "out",
        "more",
        "some",
        "very",
    ]
)


def _anchor_cover(phrases: Sequence[str]) -> dict[str, list[int]]:
    """Group phrase indexes under few anchor words, each a word (len >= 3, not common) of its phrases."""
    words = [set(_WORD.findall(p)) for p in phrases]
    groups: dict[str, list[int]] = {}
    todo = set(range(len(phrases)))
    while todo:
        counts: Counter[str] = Counter()
        for i in todo:
            counts.update(w for w in words[i] if len(w) >= 3 and w not in _COMMON)
        if counts:
            anchor = max(counts, key=lambda w: (counts[w], len(w), w))
        else:  # a phrase made only of short/common words: use its longest word, or the phrase itself
            i = min(todo)
            anchor = max(words[i], key=len) if words[i] else phrases[i]
        members = sorted(i for i in todo if anchor in words[i] or anchor == phrases[i])
        groups[anchor] = members
        todo.difference_update(members)
    return groups


# ---- the base class and the runner -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a filter drops a record: a stable machine reason and a human detail."""

    reason: str
    detail: str = ""


class Filter(ABC):
    """One quality rule. Subclasses set ``name`` and implement :meth:`check`."""

    name: ClassVar[str]

    @abstractmethod
    def check(self, record: Record) -> Rejection | None:
        """None to keep the record, or the :class:`Rejection` saying why it goes."""

    def reject(self, detail: str = "", reason: str | None = None) -> Rejection:
        """Build a rejection under this filter's name (or a more specific ``reason``)."""
        return Rejection(reason or self.name, detail)


class FilterPipeline:
    """Threads records through filters in order; keeps counts of drops by reason."""

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = list(filters)
        self.counts: Counter[str] = Counter()
        self.seen = 0
        self.kept = 0

    def check(self, record: Record) -> Rejection | None:
        """The first rejection of ``record``, or None when every filter keeps it (no counting)."""
        for f in self.filters:
            verdict = f.check(record)
            if verdict is not None:
                return verdict
        return None

    def run(self, records: Iterable[Record], on_reject: OnReject | None = None) -> Iterator[Record]:
        """Yield kept records; report and count the others."""
        for record in records:
            if self.take(record, self.check(record), on_reject):
                yield record

    def take(self, record: Record, verdict: Rejection | None, on_reject: OnReject | None = None) -> bool:
        """Count ``record`` under its ``verdict`` (from :meth:`check`, maybe computed earlier); True = kept."""
        self.seen += 1
        if verdict is None:
            self.kept += 1
            return True
        self.counts[verdict.reason] += 1
        if on_reject is not None:
            on_reject(record, "filter", verdict.reason, verdict.detail)
        return False


# ---- the filters -------------------------------------------------------------------------------------------
class EmptyFilter(Filter):
    """Empty always; too short (< ``min_chars``) when a system message was set (or always, if configured)."""

    name = "empty"

    def __init__(
        self,
        *,
        empty: bool = True,
        too_short: bool = True,
        min_chars: int = 10,
        only_with_system: bool = True,
    ) -> None:
        self.empty = empty
        self.too_short = too_short
        self.min_chars = min_chars
        self.only_with_system = only_with_system

    def check(self, record: Record) -> Rejection | None:
        text = (record.response or "").strip()
        if not text:
            return self.reject("no response text") if self.empty else None
        if (
            self.too_short
            and len(text) < self.min_chars
            and (record.system_prompt or not self.only_with_system)
        ):
            return self.reject(f"{len(text)} < {self.min_chars} characters", reason="too_short")
        return None


class TruncatedFilter(Filter):
    """The teacher stopped at max_tokens (``finish_reason == "length"``): the answer is cut off."""

    name = "truncated"

    def check(self, record: Record) -> Rejection | None:
        if record.finish_reason == "length":
            return self.reject(f"finish_reason=length after {record.completion_tokens} completion tokens")
        return None


class RefusalFilter(Filter):
    """The response contains a refusal / AI-identity / knowledge-cutoff / moralising phrase."""

    name = "refusal"

    def __init__(self, phrases: Iterable[tuple[str, str]]) -> None:
        self.matcher = PhraseMatcher(phrases)

    @classmethod
    def from_file(cls, path: str | Path | None = None, extra: Iterable[str] = ()) -> RefusalFilter:
        """The maintained list (or ``path``) plus ``extra`` phrases (group "extra")."""
        phrases = load_refusals(path).phrases()
        phrases += [("extra", p) for p in extra]
        return cls(phrases)

    def check(self, record: Record) -> Rejection | None:
        hit = self.matcher.search(record.response or "")
        if hit is None:
            return None
        group, phrase = hit
        return self.reject(f"{group}: {phrase!r}")


class NotEnoughInformationFilter(Filter):
    """OpenOrca: drop responses saying "not enough information" (optionally unless FLAN's target does)."""

    name = "not_enough_information"

    def __init__(self, phrases: Sequence[str] = ("not enough information",), unless_target: bool = False):
        self.matcher = PhraseMatcher(("nei", p) for p in phrases)
        self.unless_target = unless_target

    def check(self, record: Record) -> Rejection | None:
        hit = self.matcher.search(record.response or "")
        if hit is None:
            return None
        if self.unless_target and self.matcher.search(record.target) is not None:
            return None
        return self.reject(f"contains {hit[1]!r}")


class AsksQuestionFilter(Filter):
    """The answer ends by asking the user something although the prompt asked no question.

    Rule: ``response.rstrip().endswith("?")`` and none of ``exempt_markers`` occurs in the question
    (case-insensitive). OpenOrca used the single marker "question".
    """

    name = "asks_question"

    def __init__(self, exempt_markers: Sequence[str] = ("question", "?")) -> None:
        self.exempt_markers = [m.lower() for m in exempt_markers if m]

    def check(self, record: Record) -> Rejection | None:
        if not (record.response or "").rstrip().endswith("?"):
            return None
        question = record.question.lower()
        if any(m in question for m in self.exempt_markers):
            return None
        tail = (record.response or "").rstrip()[-80:].replace("\n", " ")
        return self.reject(f"ends with a question: ...{tail}")


class AnswerDisagreesFilter(Filter):
    """The offline answer check found the final answer disagrees with FLAN's target (SlimOrca's idea)."""

    name = "answer_disagrees"

    def check(self, record: Record) -> Rejection | None:
        if record.agrees_with_target is False:
            return self.reject(f"target {record.target[:60]!r}")
        return None


def build_filters(config: FilterConfig | None = None) -> list[Filter]:
    """The enabled filters in their fixed order (cheap, structural checks first)."""
    config = config or FilterConfig()
    filters: list[Filter] = []
    if config.empty or config.too_short:
        filters.append(
            EmptyFilter(
                empty=config.empty,
                too_short=config.too_short,
                min_chars=config.min_response_chars,
                only_with_system=config.min_chars_only_with_system,
            )
        )
    if config.truncated:
        filters.append(TruncatedFilter())
    if config.refusal:
        filters.append(RefusalFilter.from_file(config.refusal_file, config.extra_refusal_phrases))
    if config.not_enough_information:
        filters.append(
            NotEnoughInformationFilter(
                config.not_enough_information_phrases, config.keep_not_enough_information_if_target
            )
        )
    if config.asks_question:
        filters.append(AsksQuestionFilter(config.asks_question_exempt_markers))
    if config.answer_disagrees:
        filters.append(AnswerDisagreesFilter())
    return filters
