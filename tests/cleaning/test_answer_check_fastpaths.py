"""The answer check's fast paths skip work that cannot change the result; pinned here against the full
computation on texts built to hit their edges (unicode, markdown, LaTeX, option markers)."""

from __future__ import annotations

import random
import unicodedata

from tracegen.cleaning.answer_check_targets import (
    _BOXED,
    _FRAC,
    _MARKDOWN,
    _MARKER,
    _QUOTES,
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
    "A", "B", "b", "c", "J", "K", "1", "2", "10", "12", "13", "i", "ii", "iv", "IX", "x", "vii", "xi",
    "(", ")", "[", "]", ".", ":", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "-", "*", "**", "_", "__", "`",
    "\\", "\\boxed{4}", "\\frac{1}{2}", "\\dfrac{3}{4}", "\\$", "\\%", "\\text", "\\(", "\\]", "’", "“", "é",
    "ﬁ", "①", "Ⅳ", "answer", "Options", "foo", "e.g.", "3.5", "$5", "word",
]


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 14))) for _ in range(n)]


def test_clean_fast_path_equals_every_step() -> None:
    for text in _texts(1, 20000):
        assert _clean(text) == _clean_every_step(text), text


def test_marker_prefilter_never_hides_a_marker() -> None:
    for text in _texts(2, 40000) + ["A. foo", "x (B) y", "i) one ii) two", "Item 12: x", "IV.. five", "a:\tb"]:
        found = [m for m in _MARKER.finditer(text) if m.group("open") or m.group("close")]
        if found:
            assert _may_have_markers(text), text
    assert not _may_have_markers("Item 3012: a west story?\nOPTIONS:\n- world\n- one")
    assert _may_have_markers("Pick one: A. yes B. no")
    assert _may_have_markers("A) yes")
