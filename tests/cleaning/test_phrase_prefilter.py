"""PhraseMatcher finds anchors by one set intersection with the text's [a-z0-9]+ runs; pinned here against
the substring scan it replaced (one ``anchor in text`` per anchor) on texts built to hit its edges."""

from __future__ import annotations

import random
import re

from tracegen.cleaning.filters import PhraseMatcher, RefusalFilter, _lowered


def _search_by_scanning(m: PhraseMatcher, text: str) -> tuple[str, str] | None:
    """The previous algorithm: a substring scan per anchor, then the anchor's phrases."""
    low = _lowered(text)
    for anchor in m._anchors:
        if anchor not in low:
            continue
        for body, bound_start, bound_end, label, phrase in m._by_anchor[anchor]:
            for hit in re.compile(body).finditer(low):
                start, end = hit.span()
                if bound_start and start > 0 and low[start - 1].isalnum():
                    continue
                if bound_end and end < len(low) and low[end].isalnum():
                    continue
                return label, phrase
    return None


_EDGES = [
    "",
    " ",
    "\n",
    "\u00a0",
    "\ud800",
    *["_", "x", "9", "é", "É", "’", "'", "-", "(", ")", ".", "ß", "İ", "K"],
]


def _variants(phrase: str, rng: random.Random) -> str:
    text = phrase
    if rng.random() < 0.5:
        text = text.upper() if rng.random() < 0.5 else text.title()
    if rng.random() < 0.3:
        text = text.replace("'", "\u2019")
    if rng.random() < 0.3:
        text = text.replace(" ", rng.choice(["  ", "\n", "\t ", "_", "-"]))
    if rng.random() < 0.2 and len(text) > 3:  # a phrase cut short or run into another word
        cut = rng.randrange(1, len(text))
        text = text[:cut] + rng.choice(_EDGES) + text[cut:]
    return rng.choice(_EDGES) + text + rng.choice(_EDGES)


def test_prefilter_equals_substring_scan_on_tricky_texts() -> None:
    rng = random.Random(16)
    refusals = RefusalFilter.from_file().matcher
    own = ["cat nap", "(beta)", "¿¿¿", "é-clair", "naïve ai", "a b", "x_y", "don't"]
    odd = PhraseMatcher(("g", p) for p in own)
    phrases = [*own, "as an ai language model", "i'm sorry", "i cannot", "openai", "not enough information"]
    for matcher in (refusals, odd, PhraseMatcher([("nei", "not enough information")])):
        phrases += [
            body.replace("\\s+", " ").replace("\\", "") for r in matcher._by_anchor.values() for body, *_ in r
        ]
    filler = [
        "",
        *["the", "answer", "is", "catnap", "sorryful", "unsorry", "ai", "model", "Naïve", "beta2", "!"],
    ]
    few = PhraseMatcher(("g", p) for p in ["cat nap", "don't", "¿¿¿"])
    assert few._few and not refusals._few and not odd._few  # both ways of finding anchors are compared
    for _ in range(4000):
        parts = [rng.choice(filler) for _ in range(rng.randrange(0, 6))]
        for _ in range(rng.randrange(0, 3)):
            parts.insert(rng.randrange(len(parts) + 1), _variants(rng.choice(phrases), rng))
        text = rng.choice(["", " ", "_"]).join(parts) if rng.random() < 0.2 else " ".join(parts)
        for matcher in (refusals, odd, few):
            assert matcher.search(text) == _search_by_scanning(matcher, text), text


def test_prefilter_edges() -> None:
    m = PhraseMatcher([("g", "cat nap"), ("g", "¿¿¿"), ("g", "don't")])
    assert m.search("") is None
    assert m.search("a_cat nap_") == ("g", "cat nap")  # "_" is not alphanumeric: a boundary
    assert m.search("écat napé") is None  # é is alphanumeric: no word boundary
    assert m.search("«cat nap»") == ("g", "cat nap")
    assert m.search("what ¿¿¿ now") == ("g", "¿¿¿")  # an anchor without letters is scanned for
    assert m.search("I DON\u2019T") == ("g", "don't")
    assert m.search("lone \ud800 surrogate cat nap") == ("g", "cat nap")
