"""Numbers in answers and targets: digits, fractions, percentages, units and number words, compared
numerically (:mod:`tracegen.answer_check`).
"""

from __future__ import annotations

import math
import re

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
