"""MinHash speed-ups keep the same numbers: the P**j tables built by doubling equal the sequential cumprod,
and signatures do not depend on how a batch is grouped (max_chars)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tracegen.cleaning.minhash import _P, _P_INV, MinHasher, _power_table


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 1000, 65537])
def test_power_table_equals_cumprod(n: int) -> None:
    for base in (_P, _P_INV):
        with np.errstate(over="ignore"):
            seq = np.cumprod(np.full(n - 1, base, dtype=np.uint64), dtype=np.uint64)
        want = np.concatenate([np.ones(1, dtype=np.uint64), seq])
        assert np.array_equal(_power_table(base, n), want)


def test_signatures_do_not_depend_on_grouping() -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "δέλτα", "x", "naïve", "", "a_b", "42"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 60))) for _ in range(300)]
    m = MinHasher()
    whole, has_whole = m.signatures(texts, max_chars=1 << 30)
    for max_chars in (1, 100, 1 << 12, 1 << 16):
        sig, has = MinHasher().signatures(texts, max_chars=max_chars)
        assert np.array_equal(sig, whole) and np.array_equal(has, has_whole)


def test_sorted_unique_equals_np_unique() -> None:
    from tracegen.cleaning.minhash import _sorted_unique

    rng = np.random.default_rng(5)
    cases = [np.zeros(0, dtype=np.uint64), np.array([7], dtype=np.uint64), np.array([3, 3], dtype=np.uint64)]
    cases += [rng.integers(0, n, size=n, dtype=np.uint64) for n in (2, 10, 1000)]
    cases += [
        np.array([2**64 - 1, 0, 2**63, 2**64 - 1], dtype=np.uint64),
        np.arange(6, dtype=np.uint64).reshape(2, 3),
    ]
    for values in cases:
        got = _sorted_unique(values)
        assert got.dtype == np.uint64 and np.array_equal(got, np.unique(values))


def test_shingle_hashes_equal_str_translate_form() -> None:
    """Punctuation is mapped on the UTF-8 bytes (ASCII) and per text (the rest); the hashes equal those of
    the plain str form (``shingle_text`` per text, newlines as spaces), which has nothing left to map."""
    rng = random.Random(9)
    pieces = ["«x»", "‘q’", "“w”", "a–b", "c—d", "…", "é", "naïve", "\u00ab", "\u00bb", "x_y", "it's"]
    pieces += ["\n", " ", "!", "#", "ß", "日本", "\u0300", "a.b", "-", "[z]", "\\", "~", "end", "A B"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12))) for _ in range(500)]
    m = MinHasher()
    for normalized in (True, False):
        plain = [m.shingle_text(t, normalized).replace("\n", " ") for t in texts]
        got, want = m.shingle_hashes(texts, normalized), m.shingle_hashes(plain, True)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
