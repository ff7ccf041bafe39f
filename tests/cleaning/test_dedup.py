"""Dedup: exact keys, MinHash LSH near-duplicates, bounded key sets, persistable state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from tracegen.cleaning.dedup import (
    DedupConfig,
    Deduper,
    DedupState,
    HashSet64,
    MinHasher,
    lsh_params,
    normalize_text,
    public_settings,
    text_hash,
)
from tracegen.errors import ConfigError, RunDirError
from tracegen.records import Record

VOCAB = [f"w{i}" for i in range(20000)]


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def rec(i: int, question: str, response: str, system: str = "You are an AI assistant.") -> Record:
    return Record(id=f"flan.{i}", submix="flan", question=question, system_prompt=system, response=response)


def ids(records: list[Record]) -> list[str]:
    return [r.id for r in records]


# ---- normalization and key sets ----------------------------------------------------------------------------
def test_normalize_text() -> None:
    assert normalize_text("  Hello\u00a0 WORLD\n\tagain ") == "hello world again"
    assert normalize_text("ﬁne Straße") == "fine strasse"  # NFKC ligature, casefold ß
    assert text_hash("Hello  world") == text_hash("hello WORLD ")
    assert text_hash("hello world") != text_hash("hello worlds")
    assert 0 <= text_hash("x") < 2**64


def test_hashset64_add_contains_and_merge() -> None:
    s = HashSet64()
    assert 5 not in s and len(s) == 0
    s.add_many(np.array([5, 3, 5, 2**64 - 1], dtype=np.uint64))
    assert len(s) == 3 and 5 in s and 2**64 - 1 in s and 4 not in s
    rng = np.random.default_rng(0)
    many = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    for chunk in np.array_split(many, 7):  # passes the delta threshold: exercises the base merge
        s.add_many(chunk)
    assert len(s) == len(np.unique(many)) + 3
    assert s.contains_many(many).all()
    others = rng.integers(2**63, 2**64 - 2, 1000, dtype=np.uint64)
    assert not s.contains_many(others).any()
    arr = s.to_array()
    assert (np.diff(arr.astype(np.float64)) >= 0).all() and s.nbytes == arr.nbytes == 8 * len(s)


# ---- MinHash and LSH parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize(("threshold", "num_perm"), [(0.5, 64), (0.8, 128), (0.9, 128), (0.95, 256)])
def test_lsh_params_match_datasketch(threshold: float, num_perm: int) -> None:
    assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_signatures_equal_datasketch_minhash() -> None:
    mh = MinHasher(num_perm=64, seed=3, shingle_words=3)
    texts = ["The quick brown fox jumps over the lazy dog.", "one", "", "Ünïcode — TEXT, with punctuation!"]
    hashes, counts = mh.shingle_hashes(texts)
    assert counts.tolist() == [7, 1, 0, 2]
    sig, has = mh.signatures(texts)
    assert has.tolist() == [True, True, False, True]
    offset = 0
    for i, c in enumerate(counts):
        if c:
            ref = MinHash(num_perm=64, seed=3, hashfunc=lambda x: x)
            ref.update_batch([int(v) for v in hashes[offset : offset + c]])
            assert np.array_equal(ref.digest(), sig[i])
        offset += int(c)


def test_signatures_estimate_jaccard_and_batching_is_invisible() -> None:
    rng = random.Random(1)
    mh = MinHasher(num_perm=256)
    base = words(rng, 300)
    texts = [" ".join(base), " ".join(base[:150] + words(rng, 150)), " ".join(words(rng, 300))]
    sig, _ = mh.signatures(texts)
    est_half = float((sig[0] == sig[1]).mean())
    est_none = float((sig[0] == sig[2]).mean())
    # 146 of 296 shingles shared: Jaccard 146 / 446 ~ 0.33.
    assert 0.2 < est_half < 0.45 and est_none < 0.05
    small, _ = mh.signatures(texts, max_chars=100)  # one text per group
    assert np.array_equal(small, sig)


# ---- exact dedup -------------------------------------------------------------------------------------------
def test_exact_kinds_first_occurrence_kept_and_counted() -> None:
    rng = random.Random(2)
    long1, long2, long3 = (" ".join(words(rng, 40)) for _ in range(3))
    records = [
        rec(0, "What is 2+2?", long1),
        rec(1, "what is  2+2?", long2),  # same normalized question, same system: exact_pair
        rec(2, "What is 2+2?", long3, system="Explain like I'm five."),  # same question only
        rec(3, "Another question", long1.upper()),  # same normalized (long) response
        rec(4, "Q4", "Yes."),
        rec(5, "Q5", "Yes."),  # short responses are never response-deduplicated
        rec(6, "Q6", long2),  # long2 belonged to a dropped record: not a duplicate of a kept one
    ]
    reported: list[tuple[str, str, str]] = []
    d = Deduper(DedupConfig(near_response=False))
    kept = list(d.run(records, on_reject=lambda r, stage, kind, detail: reported.append((r.id, stage, kind))))
    assert ids(kept) == ["flan.0", "flan.4", "flan.5", "flan.6"]
    assert reported == [
        ("flan.1", "dedup", "exact_pair"),
        ("flan.2", "dedup", "exact_question"),
        ("flan.3", "dedup", "exact_response"),
    ]
    assert dict(d.counts) == {"exact_pair": 1, "exact_question": 1, "exact_response": 1}
    assert d.seen == 7 and d.kept == 4


def test_exact_kinds_can_be_switched_off() -> None:
    records = [rec(0, "Same?", "a b c"), rec(1, "Same?", "d e f", system="other")]
    cfg = DedupConfig(exact_question=False, near_response=False)
    assert ids(list(Deduper(cfg).run(records))) == ["flan.0", "flan.1"]
    cfg = DedupConfig(near_response=False)
    assert ids(list(Deduper(cfg).run(records))) == ["flan.0"]
    with pytest.raises(ValueError, match="extra"):
        DedupConfig.model_validate({"near_responses": True})


# ---- near dedup --------------------------------------------------------------------------------------------
def make_near_set(seed: int = 3, n_base: int = 60) -> tuple[list[Record], set[str]]:
    """Unrelated responses plus planted near-duplicates (one word changed in 200): the planted ids."""
    rng = random.Random(seed)
    bases = [words(rng, 200) for _ in range(n_base)]
    records = [rec(i, f"question {i}", " ".join(b)) for i, b in enumerate(bases)]
    planted = set()
    for j, b in enumerate(bases[:20]):
        copy = list(b)
        copy[rng.randrange(200)] = rng.choice(VOCAB)
        i = n_base + j
        records.append(rec(i, f"question {i}", " ".join(copy) + "!"))  # punctuation does not matter either
        planted.add(f"flan.{i}")
    return records, planted


def test_near_duplicate_responses_found_unrelated_kept() -> None:
    records, planted = make_near_set()
    reported: list[tuple[str, str]] = []
    d = Deduper()
    kept = list(d.run(records, on_reject=lambda r, stage, kind, detail: reported.append((r.id, kind))))
    dropped = {r for r, _ in reported}
    # One changed word in 200 -> Jaccard ~0.95 (5-word shingles): collision probability ~0.99 per pair at
    # the default threshold (0.85: 8 bands x 16 rows); deterministic with the fixed seed.
    assert dropped <= planted
    assert len(dropped) >= 18
    assert all(kind == "near_response" for _, kind in reported)
    assert len(kept) == len(records) - len(dropped)
    assert d.counts["near_response"] == len(dropped)


def test_identical_after_normalization_is_always_near_duplicate() -> None:
    rng = random.Random(4)
    text = " ".join(words(rng, 50))
    records = [rec(0, "q0", text), rec(1, "q1", text.replace(" ", " , "))]  # punctuation only differs
    d = Deduper(DedupConfig(exact_response=False))
    assert ids(list(d.run(records))) == ["flan.0"]
    assert d.counts == {"near_response": 1}


def test_threshold_is_respected() -> None:
    rng = random.Random(5)
    pairs = []
    for i in range(20):  # pairs sharing ~60% of their words in one block: Jaccard well below 0.9
        a = words(rng, 200)
        b = a[:120] + words(rng, 80)
        pairs += [rec(2 * i, f"q{2 * i}", " ".join(a)), rec(2 * i + 1, f"q{2 * i + 1}", " ".join(b))]
    strict = Deduper()
    assert len(list(strict.run(pairs))) == 40  # nothing dropped at 0.9
    assert len(list(Deduper(DedupConfig(response_threshold=0.9)).run(pairs))) == 40
    loose = Deduper(DedupConfig(response_threshold=0.3))
    assert len(list(loose.run(pairs))) <= 24  # most pairs collide at 0.3


def test_short_responses_skip_near_dedup() -> None:
    records = [rec(0, "q0", "The answer is B."), rec(1, "q1", "The answer is B!")]
    assert len(list(Deduper().run(records))) == 2


def test_near_question_off_by_default_and_on_when_asked() -> None:
    rng = random.Random(6)
    passage = " ".join(words(rng, 150))
    records = [
        rec(0, passage + " Question: who?", " ".join(words(rng, 30))),
        rec(1, passage + " Question: when?", " ".join(words(rng, 30))),
    ]
    assert len(list(Deduper().run(records))) == 2
    d = Deduper(DedupConfig(near_question=True))
    assert ids(list(d.run(records))) == ["flan.0"] and d.counts == {"near_question": 1}


def test_batch_size_does_not_change_the_result() -> None:
    records, _ = make_near_set(seed=7, n_base=30)
    records += records[:5]  # exact repeats across batches
    one = ids(list(Deduper(DedupConfig(batch_size=10_000)).run(records)))
    small = ids(list(Deduper(DedupConfig(batch_size=3)).run(records)))
    assert one == small


# ---- state -------------------------------------------------------------------------------------------------
def test_state_roundtrip_dedups_a_second_run(tmp_path: Path) -> None:
    records, _ = make_near_set(seed=8, n_base=20)
    first = Deduper()
    kept_a = list(first.run(records[:20]))
    path = tmp_path / "dedup_state.npz"
    first.state.save(path)
    assert not (tmp_path / "dedup_state.npz.tmp").exists()
    loaded = DedupState.load(path, DedupConfig())
    assert loaded.sizes() == first.state.sizes() and loaded.nbytes() > 0
    # Run B: its own new records plus repeats and near-repeats of run A's.
    second = Deduper(state=loaded)
    run_b = [rec(100 + i, "new " + r.question, r.response or "") for i, r in enumerate(records[:5])]
    run_b += [*records[20:], rec(200, "fresh question", "fresh answer")]
    kept_b = list(second.run(run_b))
    assert len(kept_a) == 20
    assert "flan.200" in ids(kept_b)
    assert second.counts["exact_response"] == 5  # same responses as run A
    assert second.counts["near_response"] >= 12  # planted near-copies of run A's responses


def test_state_incompatible_settings_and_bad_files(tmp_path: Path) -> None:
    d = Deduper()
    list(d.run([rec(0, "q", " ".join(["word"] * 10 + [f"x{i}" for i in range(30)]))]))
    path = tmp_path / "s.npz"
    d.state.save(path)
    with pytest.raises(ConfigError, match="num_perm"):
        DedupState.load(path, DedupConfig(num_perm=64))
    with pytest.raises(ConfigError, match="response_min_words"):
        Deduper(DedupConfig(response_min_words=5), state=DedupState.load(path))
    DedupState.load(path, DedupConfig(near_question=True))  # other switches are fine
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RunDirError, match="not a tracegen dedup state"):
        DedupState.load(bad)


def test_state_update_merges_keys() -> None:
    a, b = Deduper(), Deduper()
    list(a.run([rec(0, "qa", "x")]))
    list(b.run([rec(1, "qb", "y")]))
    a.state.update(b.state)
    assert a.state.sizes()["exact_question"] == 2
    c = Deduper(state=a.state)
    assert list(c.run([rec(2, "qb", "z")])) == []


def test_public_dict_names_lsh_bands() -> None:
    data = public_settings(DedupConfig())
    assert data["response_lsh"] == {"bands": 8, "rows": 16}
    assert data["question_lsh"] == {"bands": 5, "rows": 25}
    assert data["near_question"] is False and data["near_response"] is True
