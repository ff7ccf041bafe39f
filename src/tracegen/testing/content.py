"""Synthetic answers with an exact token count, built without tokenizing per request.

For each encoding a long *tape* of text is built once from pieces whose token counts are known: words
(" word", a space then letters), sentence ends (".") and step breaks (".\\n\\nStep 3:"). Pieces only meet at
places where tiktoken's pre-tokenizer always splits (a letter or ":" before a space, a letter before "."), so
the token count of any concatenation is the sum of the pieces' counts. The tape is checked against a real
encode once when it is built, and the tests check random answers against ``count_text_tokens``.

An answer of N tokens is the marker intro, a slice of the tape that starts at a step break and ends after a
word, one-token filler words to land exactly on N, and a final "." when the answer is complete (not cut at
max_tokens). Answers shorter than the intro are a prefix of the intro whose token count is known.
"""

from __future__ import annotations

import functools
import hashlib
import random
from bisect import bisect_right
from dataclasses import dataclass

from ..planning.tokens import get_encoding

__all__ = ["INTRO", "Answer", "AnswerTape", "tape_for"]

#: Every answer starts with this marker, so fake output is never mistaken for real data.
INTRO = "[tracegen-fake] Synthetic answer"

_WORDS = (
    "first",
    "second",
    "then",
    "next",
    "finally",
    "we",
    "the",
    "a",
    "an",
    "to",
    "of",
    "and",
    "in",
    "it",
    "is",
    "this",
    "that",
    "answer",
    "question",
    "task",
    "step",
    "read",
    "identify",
    "compare",
    "check",
    "list",
    "note",
    "find",
    "use",
    "apply",
    "rule",
    "value",
    "result",
    "reason",
    "because",
    "so",
    "therefore",
    "given",
    "option",
    "choice",
    "correct",
    "wrong",
    "other",
    "each",
    "all",
    "both",
    "only",
    "must",
    "should",
    "can",
    "will",
    "would",
    "make",
    "sense",
    "fact",
    "facts",
    "known",
    "unknown",
    "statement",
    "premise",
    "conclusion",
    "follows",
    "holds",
    "true",
    "false",
    "example",
    "part",
    "key",
    "meaning",
    "sentence",
    "word",
    "context",
    "definition",
    "instruction",
    "input",
    "output",
    "explain",
    "simple",
    "clear",
    "way",
    "small",
    "number",
    "count",
    "total",
    "sum",
    "difference",
    "equal",
    "greater",
    "less",
    "more",
    "most",
    "least",
    "order",
    "before",
    "after",
    "same",
    "different",
    "data",
    "text",
    "topic",
    "idea",
    "point",
    "case",
    "simply",
    "carefully",
    "directly",
    "likely",
    "unlikely",
    "evidence",
    "support",
    "claim",
    "think",
    "justify",
    "verify",
    "confirm",
    "summary",
    "look",
    "consider",
    "start",
    "end",
    "goal",
    "plan",
    "method",
)
_FILLER_CANDIDATES = ("the", "and", "so", "we", "it", "to", "of", "a")
_TAPE_STEPS = 1500
_SEED = 20230605  # fixed: the tape is part of the format, not of a run


@dataclass(frozen=True, slots=True)
class Answer:
    """One synthetic completion."""

    content: str
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


class AnswerTape:
    """Pre-tokenized text for one encoding; ``answer()`` costs a few string slices, no tokenizing."""

    def __init__(self, encoding: str) -> None:
        enc = get_encoding(encoding)
        self.encoding = encoding

        def count(text: str) -> int:
            return len(enc.encode_ordinary(text))

        rng = random.Random(_SEED)
        word_tokens = {w: count(" " + w) for w in _WORDS}
        cap_tokens = {w: count(" " + w.capitalize()) for w in _WORDS}
        self._fillers = [" " + w for w in _FILLER_CANDIDATES if word_tokens.get(w, count(" " + w)) == 1]
        if not self._fillers:  # pragma: no cover - every OpenAI encoding has one-token " the"
            raise RuntimeError(f"no one-token filler word in {encoding}")
        step_tokens = {k: count(f".\n\nStep {k}:") for k in range(1, 10)}

        pieces: list[str] = []
        tokens: list[int] = []
        is_word: list[bool] = []
        step_starts: list[int] = []
        for step in range(_TAPE_STEPS):
            k = step % 9 + 1
            step_starts.append(len(pieces))
            pieces.append(f".\n\nStep {k}:")
            tokens.append(step_tokens[k])
            is_word.append(False)
            for sentence in range(rng.randint(1, 3)):
                if sentence:
                    pieces.append(".")
                    tokens.append(1)
                    is_word.append(False)
                for i in range(rng.randint(5, 14)):
                    w = rng.choice(_WORDS)
                    if i == 0:
                        pieces.append(" " + w.capitalize())
                        tokens.append(cap_tokens[w])
                    else:
                        pieces.append(" " + w)
                        tokens.append(word_tokens[w])
                    is_word.append(True)

        self._text = "".join(pieces)
        self._total_tokens = sum(tokens)
        real = count(self._text)
        if real != self._total_tokens:  # pragma: no cover - guards the boundary argument above
            raise RuntimeError(
                f"answer tape for {encoding}: pieces sum to {self._total_tokens}, text is {real}"
            )
        # Cumulative token / char positions at every piece start, and after every word.
        self._start_tok: list[int] = []
        self._start_char: list[int] = []
        self._word_end_tok: list[int] = []
        self._word_end_char: list[int] = []
        tok = char = 0
        piece_tok: list[int] = []
        piece_char: list[int] = []
        for piece, n, word in zip(pieces, tokens, is_word, strict=True):
            piece_tok.append(tok)
            piece_char.append(char)
            tok += n
            char += len(piece)
            if word:
                self._word_end_tok.append(tok)
                self._word_end_char.append(char)
        self._start_tok = [piece_tok[i] for i in step_starts]
        self._start_char = [piece_char[i] for i in step_starts]

        # Prefixes of the intro by token count, for answers shorter than it.
        self.intro_tokens = count(INTRO)
        self._intro_prefix: dict[int, str] = {0: ""}
        for end in range(1, len(INTRO) + 1):
            prefix = INTRO[:end]
            if prefix[-1] != " ":
                self._intro_prefix[count(prefix)] = prefix
        for n in range(1, self.intro_tokens + 1):
            if n not in self._intro_prefix:  # pragma: no cover - depends on the encoding's merges
                self._intro_prefix[n] = "a" + self._fillers[0] * (n - 1)

    def _fill(self, n: int, pick: int) -> str:
        return "".join(self._fillers[(pick + i) % len(self._fillers)] for i in range(n))

    def _body(self, n_tokens: int, start: int, pick: int) -> str:
        """Exactly ``n_tokens`` tokens of tape from step break ``start``, ending after a word."""
        parts: list[str] = []
        remaining = n_tokens
        start_tok = self._start_tok[start]
        start_char = self._start_char[start]
        while remaining > self._total_tokens - start_tok:  # wrap around: the tape ends with a word
            parts.append(self._text[start_char:])
            remaining -= self._total_tokens - start_tok
            start_tok = start_char = 0
        target = start_tok + remaining
        i = bisect_right(self._word_end_tok, target) - 1
        if i >= 0 and self._word_end_tok[i] > start_tok:
            parts.append(self._text[start_char : self._word_end_char[i]])
            remaining = target - self._word_end_tok[i]
        parts.append(self._fill(remaining, pick))
        return "".join(parts)

    def answer(self, n_tokens: int, *, complete: bool, draw: int) -> Answer:
        """An answer of exactly ``n_tokens`` tokens (>= 1); ends with "." when ``complete``."""
        if n_tokens < 1:
            raise ValueError("an answer has at least one token")
        finish = "stop" if complete else "length"
        body_tokens = n_tokens - self.intro_tokens - (1 if complete else 0)
        if body_tokens < 0:
            return Answer(self._intro_prefix[n_tokens], n_tokens, finish)
        start = draw % len(self._start_tok)
        text = INTRO + self._body(body_tokens, start, draw >> 32) + ("." if complete else "")
        return Answer(text, n_tokens, finish)


@functools.cache
def tape_for(encoding: str) -> AnswerTape:
    """The (cached) answer tape of ``encoding``."""
    return AnswerTape(encoding)


def draw_for(seed: int, request_key: str, index: int) -> tuple[float, int]:
    """Deterministic (uniform in [0, 1), 64-bit int) for one choice of one request under ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{request_key}:{index}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big")


def completion_length(mean_tokens: int, spread: float, u: float) -> int:
    """Answer length for uniform draw ``u``: uniform in mean*(1 +/- spread), at least 1."""
    return max(1, round(mean_tokens * (1.0 + spread * (2.0 * u - 1.0))))
