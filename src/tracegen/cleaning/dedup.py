"""Deduplication: exact (normalized question, system + question, normalized response) and near-duplicate
(MinHash LSH over word shingles) — streaming, first occurrence kept, in bounded memory.

Kinds, checked in this order; the first that fires names the drop (counted in :attr:`Deduper.counts`):

=================  =======  ================================================================================
kind               default  a record is a duplicate when an earlier KEPT record has ...
=================  =======  ================================================================================
exact_pair         on       the same normalized system message + normalized question (the same request)
exact_question     on       the same normalized question (OpenOrca dropped duplicate questions); a run's
                            clean step sets it to the plan's ``plan_dedup_questions`` (default off)
                            unless ``dedup:`` names it, so no planned, paid answer is dropped
exact_response     on       the same normalized response (responses of >= ``response_min_words`` words)
near_question      off      a question whose MinHash LSH bands collide (Jaccard >~ threshold, 0.9). Off: FLAN
                            reuses long passages with different questions, which look alike to word
                            shingles yet are different tasks
near_response      on       a response whose LSH bands collide (threshold 0.85; responses >= 20 words)
=================  =======  ================================================================================

Normalization: Unicode NFKC, ``str.casefold``, whitespace runs collapsed to one space, ends stripped.
Exact keys are 8-byte xxh3-64 hashes of the normalized text (a false duplicate needs a 64-bit collision:
~3e-8 chance at 1M records). Short responses ("Yes.", "The answer is B.") legitimately repeat across
different questions, so responses under ``response_min_words`` words are never response-deduplicated.

Near duplicates: word shingles of ``shingle_words`` (5) consecutive words of the normalized text with
punctuation turned into spaces (a text of fewer words is one shingle); MinHash with ``num_perm`` (128)
permutations of datasketch's ``affine32`` scheme (``h -> a*fmix32(h) + b mod 2^32``, parameters drawn exactly
as ``datasketch.MinHash(seed=1)``), computed for a whole batch at once with numpy; LSH with ``b`` bands of
``r`` rows chosen like ``datasketch.MinHashLSH`` (minimise false positive + false negative area around the
threshold). A pair of Jaccard similarity s collides with probability ``1 - (1 - s**r)**b``; candidates are
not verified (no signatures are kept), which is what bounds memory: 8 bytes per kept record per band. The
curve is soft, so the default response threshold is 0.85, not 0.9 (measured: one word changed in a 200-word
answer, Jaccard ~0.95, was caught only ~80% of the time at 0.9):

=========  ============  ======  ======  ======  ======  ======  ======
threshold  bands x rows  s=0.5   s=0.7   s=0.8   s=0.9   s=0.93  s=0.95
=========  ============  ======  ======  ======  ======  ======  ======
0.85       8 x 16        0.000   0.026   0.20    0.81    0.95    0.99
0.9        5 x 25        0.000   0.001   0.02    0.31    0.59    0.80
=========  ============  ======  ======  ======  ======  ======  ======

Memory: every key is a uint64 in :class:`HashSet64` (a sorted numpy array plus a sorted delta, merged as it
grows); no Python object per record. 1M kept records, default kinds: (3 + 8) x 8 bytes x 1M = 88 MB of keys.

State: :meth:`Deduper.state` / :meth:`DedupState.save` / :meth:`DedupState.load` persist the keys of kept
records (``.npz``), so a later run or a merge deduplicates against earlier ones. Loading a state made with
other near-dup settings (permutations, seed, shingles, bands) raises ConfigError.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..clean_config import DedupConfig
from ..errors import ConfigError, RunDirError
from ..records import Record, _xxh, normalize_text, pair_hash, text_hash
from ..rundir import atomic_write_bytes

__all__ = [
    "KINDS",
    "DedupConfig",
    "DedupState",
    "Deduper",
    "HashSet64",
    "MinHasher",
    "lsh_params",
    "normalize_text",
    "pair_hash",
    "public_settings",
    "text_hash",
]

Kind = Literal["exact_pair", "exact_question", "exact_response", "near_question", "near_response"]
KINDS: tuple[Kind, ...] = ("exact_pair", "exact_question", "exact_response", "near_question", "near_response")
OnReject = Callable[[Record, str, str, str], None]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]

STATE_VERSION = 1


# ---- normalization and exact keys (shared with the plan: records.py) ------------------------------------
def _words(normalized: str) -> int:
    return normalized.count(" ") + 1 if normalized else 0


def public_settings(config: DedupConfig) -> dict[str, Any]:
    """JSON-able dedup settings plus the LSH bands/rows in use, for stats and the dataset card."""
    data = config.model_dump(mode="json")
    data["question_lsh"] = dict(
        zip(("bands", "rows"), lsh_params(config.question_threshold, config.num_perm), strict=True)
    )
    data["response_lsh"] = dict(
        zip(("bands", "rows"), lsh_params(config.response_threshold, config.num_perm), strict=True)
    )
    return data


# ---- LSH parameters (datasketch's optimiser, vectorized) ---------------------------------------------------
@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the false positive area below ``threshold`` plus the false negative area above
    it, with equal weights — the same optimum as ``datasketch.lsh._optimal_param``."""
    grid = np.linspace(0.0, 1.0, 2001)
    best = (float("inf"), 1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - grid**r) ** b
            lo = grid <= threshold
            fp = _area(p[lo], grid[lo])
            fn = _area(1.0 - p[~lo], grid[~lo])
            err = 0.5 * fp + 0.5 * fn
            if err < best[0]:
                best = (err, b, r)
    return best[1], best[2]


def _area(y: npt.NDArray[np.float64], x: npt.NDArray[np.float64]) -> float:
    """Trapezoid rule (numpy renamed trapz to trapezoid in 2.0; this works on both)."""
    if x.size < 2:
        return 0.0
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2.0)


# ---- a compact set of 64-bit keys --------------------------------------------------------------------------
class HashSet64:
    """A set of uint64 keys in two sorted numpy arrays (base + delta): 8 bytes per key, vectorized lookups.

    ``add_many`` merges new keys into the delta; the delta is merged into the base when it passes 1/8 of it,
    so adding n keys costs O(n log n) overall and memory stays ~8 bytes per key (plus a transient copy).
    """

    def __init__(self, values: npt.ArrayLike | None = None) -> None:
        base = np.unique(np.asarray(values, dtype=np.uint64)) if values is not None else _empty()
        self._base: U64 = base
        self._delta: U64 = _empty()

    def __len__(self) -> int:
        return int(self._base.size + self._delta.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the keys."""
        return int(self._base.nbytes + self._delta.nbytes)

    def contains_many(self, values: U64) -> npt.NDArray[np.bool_]:
        """Membership of each value (vectorized)."""
        return _isin_sorted(values, self._base) | _isin_sorted(values, self._delta)

    def __contains__(self, value: int) -> bool:
        return bool(self.contains_many(np.array([value], dtype=np.uint64))[0])

    def add_many(self, values: npt.ArrayLike) -> None:
        """Add keys (duplicates and already-present keys are fine)."""
        new = np.unique(np.asarray(values, dtype=np.uint64))
        if new.size == 0:
            return
        new = new[~_isin_sorted(new, self._base)]
        self._delta = _merge_sorted(self._delta, new)
        if self._delta.size > max(1 << 16, self._base.size // 8):
            self._base = _merge_sorted(self._base, self._delta)
            self._delta = _empty()

    def to_array(self) -> U64:
        """All keys, sorted (merges the delta)."""
        if self._delta.size:
            self._base = _merge_sorted(self._base, self._delta)
            self._delta = _empty()
        return self._base


def _empty() -> U64:
    return np.zeros(0, dtype=np.uint64)


def _isin_sorted(values: U64, sorted_arr: U64) -> npt.NDArray[np.bool_]:
    if sorted_arr.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    idx = np.searchsorted(sorted_arr, values)
    idx[idx == sorted_arr.size] = 0
    return np.asarray(sorted_arr[idx] == values)


def _merge_sorted(a: U64, b: U64) -> U64:
    if a.size == 0:
        return b
    if b.size == 0:
        return a
    out = np.concatenate([a, b])
    out.sort(kind="stable")  # timsort: two sorted runs merge in linear time
    keep = np.ones(out.size, dtype=bool)
    keep[1:] = out[1:] != out[:-1]
    return out[keep]


# ---- vectorized MinHash ------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1
_PUNCT_TO_SPACE = str.maketrans(
    {
        c: " "
        for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb"
    }
)
_P = 0x100000001B3  # FNV prime: odd, so invertible mod 2**64
_P_INV = pow(_P, -1, 1 << 64)
_SHINGLE_MULT = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD]
    + [(0x9E3779B97F4A7C15 * (i + 7) | 1) & _M64 for i in range(11)],
    dtype=np.uint64,
)


def _fmix64(h: U64) -> U64:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    out: U64 = h ^ (h >> np.uint64(33))
    return out


def _fmix32(h: U32) -> U32:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    out: U32 = h ^ (h >> np.uint32(16))
    return out


class _Powers:
    """P**j and P**-j mod 2**64 for j < n, grown on demand."""

    def __init__(self) -> None:
        self.pw: U64 = np.ones(1, dtype=np.uint64)
        self.inv: U64 = np.ones(1, dtype=np.uint64)

    def ensure(self, n: int) -> None:
        if self.pw.size >= n:
            return
        size = max(n, 2 * self.pw.size)
        one = np.ones(1, dtype=np.uint64)
        with np.errstate(over="ignore"):  # uint64 products wrap: arithmetic mod 2**64 is the point
            self.pw = np.concatenate(
                [one, np.cumprod(np.full(size - 1, _P, dtype=np.uint64), dtype=np.uint64)]
            )
            self.inv = np.concatenate(
                [one, np.cumprod(np.full(size - 1, _P_INV, dtype=np.uint64), dtype=np.uint64)]
            )


class MinHasher:
    """Batch MinHash signatures of texts (datasketch ``affine32`` scheme) and their LSH band keys."""

    def __init__(self, num_perm: int = 128, seed: int = 1, shingle_words: int = 5) -> None:
        if shingle_words > _SHINGLE_MULT.size:
            raise ConfigError(f"shingle_words={shingle_words} is more than {_SHINGLE_MULT.size}; use fewer")
        self.num_perm = num_perm
        self.seed = seed
        self.shingle_words = shingle_words
        gen = np.random.RandomState(seed)  # exactly datasketch.MinHash._init_permutations (affine32)
        self.a: U32 = (
            gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        ).astype(np.uint32)
        self.b: U32 = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self._powers = _Powers()

    @staticmethod
    def shingle_text(text: str, normalized: bool = False) -> str:
        """The form shingles are cut from: normalized, punctuation as spaces."""
        return (text if normalized else normalize_text(text)).translate(_PUNCT_TO_SPACE)

    def shingle_hashes(
        self, texts: Sequence[str], normalized: bool = False
    ) -> tuple[U32, npt.NDArray[np.int64]]:
        """32-bit hashes of every shingle of every text, and each text's shingle count (0 for no words).
        ``normalized=True`` skips :func:`normalize_text` for texts that went through it already."""
        k = self.shingle_words
        n = len(texts)
        joined = "\n".join(self.shingle_text(t, normalized).replace("\n", " ") for t in texts).encode("utf-8")
        data = np.frombuffer(joined, dtype=np.uint8)
        if data.size == 0:
            return np.zeros(0, dtype=np.uint32), np.zeros(n, dtype=np.int64)
        sep = (data == 32) | (data == 10)
        prev_sep = np.concatenate([[True], sep[:-1]])
        next_sep = np.concatenate([sep[1:], [True]])
        starts = np.flatnonzero(~sep & prev_sep)
        ends = np.flatnonzero(~sep & next_sep) + 1
        newlines = np.flatnonzero(data == 10)
        rec = np.searchsorted(newlines, starts)  # text index of each word
        words_per = np.bincount(rec, minlength=n).astype(np.int64)
        # Word hashes: polynomial hash of the bytes via a prefix sum, P**-start to align, fmix64 to spread.
        self._powers.ensure(data.size + 1)
        with np.errstate(over="ignore"):
            prefix = np.zeros(data.size + 1, dtype=np.uint64)
            np.cumsum(data.astype(np.uint64) * self._powers.pw[: data.size], out=prefix[1:])
            raw = (prefix[ends] - prefix[starts]) * self._powers.inv[starts]
            words = _fmix64(raw + (ends - starts).astype(np.uint64))
            # Shingles: k consecutive words; texts are padded with k-1 zero words (a short text: one shingle).
            pad_idx = np.arange(words.size) + (k - 1) * rec
            padded = np.zeros(words.size + (k - 1) * n, dtype=np.uint64)
            padded[pad_idx] = words
            span = padded.size - (k - 1)
            sh = np.zeros(span, dtype=np.uint64)
            for t in range(k):
                sh += padded[t : t + span] * _SHINGLE_MULT[t]
        counts = np.where(words_per >= k, words_per - k + 1, np.minimum(words_per, 1)).astype(np.int64)
        first_word = np.concatenate([[0], np.cumsum(words_per)[:-1]])
        pad_start = first_word + (k - 1) * np.arange(n)
        # Positions of each text's valid shingle starts, vectorized: pad_start[r] + 0..counts[r]-1.
        total = int(counts.sum())
        offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.repeat(pad_start - offs, counts) + np.arange(total)
        hashes = (_fmix64(sh[pos]) >> np.uint64(32)).astype(np.uint32)
        return hashes, counts

    def signatures(
        self, texts: Sequence[str], normalized: bool = False, max_chars: int = 1 << 20
    ) -> tuple[U32, npt.NDArray[np.bool_]]:
        """(len(texts), num_perm) MinHash signatures and a mask of texts that had at least one word.

        Texts are hashed in groups of about ``max_chars`` characters, which bounds the temporary arrays
        (~40 bytes per character) whatever the batch size.
        """
        sigs: list[U32] = []
        masks: list[npt.NDArray[np.bool_]] = []
        start, size = 0, 0
        for i, t in enumerate(texts):
            size += len(t) + 1
            if size >= max_chars:
                sig, has = self._signatures(texts[start : i + 1], normalized)
                sigs.append(sig)
                masks.append(has)
                start, size = i + 1, 0
        if start < len(texts) or not sigs:
            sig, has = self._signatures(texts[start:], normalized)
            sigs.append(sig)
            masks.append(has)
        return np.concatenate(sigs), np.concatenate(masks)

    def _signatures(
        self, texts: Sequence[str], normalized: bool, chunk_shingles: int = 1 << 14
    ) -> tuple[U32, npt.NDArray[np.bool_]]:
        hashes, counts = self.shingle_hashes(texts, normalized)
        n = len(texts)
        sig = np.full((n, self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        has = counts > 0
        idx = np.flatnonzero(has)
        if idx.size == 0:
            return sig, has
        hv = _fmix32(hashes)
        bounds = np.concatenate([[0], np.cumsum(counts[idx])])
        # Chunks of whole texts of about chunk_shingles shingles (temp array: chunk x num_perm x 4 bytes).
        i = 0
        with np.errstate(over="ignore"):
            while i < idx.size:
                j = int(np.searchsorted(bounds, bounds[i] + chunk_shingles, side="right")) - 1
                j = min(max(j, i + 1), idx.size)
                lo, hi = int(bounds[i]), int(bounds[j])
                # (num_perm, m) layout: reduceat along the contiguous axis is ~10x faster than along axis 0.
                phv = self.a[:, None] * hv[None, lo:hi]
                phv += self.b[:, None]
                sig[idx[i:j]] = np.minimum.reduceat(phv, bounds[i:j] - lo, axis=1).T
                i = j
        return sig, has

    def band_keys(self, sig: U32, bands: int, rows: int) -> U64:
        """(n, bands) uint64 keys: band j of a signature hashed with j, so one set can hold all bands."""
        n = sig.shape[0]
        if bands * rows > self.num_perm:
            raise ConfigError(f"LSH bands x rows = {bands * rows} > num_perm {self.num_perm}")
        view = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            acc = np.broadcast_to(
                np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), (n, bands)
            )
            acc = acc.copy()
            for t in range(rows):
                acc = (acc ^ view[:, :, t]) * np.uint64(0x100000001B3)
                acc = acc ^ (acc >> np.uint64(29))
            return _fmix64(acc)


# ---- state -------------------------------------------------------------------------------------------------
@dataclass
class DedupState:
    """Keys of every kept record, per kind, plus the settings they depend on."""

    sets: dict[str, HashSet64]
    meta: dict[str, Any]

    @classmethod
    def empty(cls, config: DedupConfig) -> DedupState:
        """A fresh state for ``config``."""
        return cls({str(k): HashSet64() for k in KINDS}, _state_meta(config))

    def nbytes(self) -> int:
        """Bytes held by all keys."""
        return sum(s.nbytes for s in self.sets.values())

    def sizes(self) -> dict[str, int]:
        """Keys per kind."""
        return {k: len(s) for k, s in self.sets.items()}

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` atomically (temp file, fsync, rename)."""
        path = Path(path)
        arrays: dict[str, npt.NDArray[Any]] = {k: s.to_array() for k, s in self.sets.items()}
        buf = io.BytesIO()
        arrays["meta"] = np.frombuffer(json.dumps(self.meta).encode("utf-8"), dtype=np.uint8)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        try:
            atomic_write_bytes(path, buf.getbuffer())
        except OSError as e:
            raise RunDirError(
                f"{path}: cannot write dedup state ({e.strerror}); check space and permissions"
            ) from e

    @classmethod
    def load(cls, path: str | Path, config: DedupConfig | None = None) -> DedupState:
        """Read a saved state; with ``config``, check that its near-dup keys are comparable."""
        path = Path(path)
        try:
            with np.load(path) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                sets: dict[str, HashSet64] = {
                    k: HashSet64(z[k]) if k in z.files else HashSet64() for k in KINDS
                }
        except (OSError, ValueError, KeyError) as e:
            raise RunDirError(f"{path}: not a tracegen dedup state ({e}); delete it to start afresh") from e
        if meta.get("version") != STATE_VERSION:
            raise RunDirError(f"{path}: dedup state version {meta.get('version')} is not {STATE_VERSION}")
        state = cls(sets, meta)
        if config is not None:
            state.check_compatible(config, str(path))
        return state

    def check_compatible(self, config: DedupConfig, where: str = "dedup state") -> None:
        """Raise ConfigError when keys in this state were made with other settings than ``config``."""
        want = _state_meta(config)
        for key in ("normalization", "exact_hash", "response_min_words"):
            if self.meta.get(key) != want[key]:
                raise ConfigError(
                    f"{where}: made with {key}={self.meta.get(key)!r}, this run uses {want[key]!r}; "
                    "use the same dedup settings or delete the state"
                )
        near = ("num_perm", "seed", "shingle_words")
        for kind, lsh in (("near_question", "question_lsh"), ("near_response", "response_lsh")):
            if len(self.sets[kind]) == 0:
                continue
            for key in (*near, lsh):
                if self.meta.get(key) != want[key]:
                    raise ConfigError(
                        f"{where}: {kind} keys made with {key}={self.meta.get(key)!r}, this run uses "
                        f"{want[key]!r}; use the same dedup settings or delete the state"
                    )

    def update(self, other: DedupState) -> None:
        """Add every key of ``other`` (same settings) to this state."""
        for k in KINDS:
            self.sets[k].add_many(other.sets[k].to_array())


def _state_meta(config: DedupConfig) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "normalization": "nfkc-casefold-ws",
        "exact_hash": "xxh3_64",
        "response_min_words": config.response_min_words,
        "question_min_words": config.question_min_words,
        "num_perm": config.num_perm,
        "seed": config.seed,
        "shingle_words": config.shingle_words,
        "question_lsh": list(lsh_params(config.question_threshold, config.num_perm)),
        "response_lsh": list(lsh_params(config.response_threshold, config.num_perm)),
    }


# ---- the dedup step ----------------------------------------------------------------------------------------
_DETAIL = {
    "exact_pair": "same normalized system message + question as an earlier record",
    "exact_question": "same normalized question as an earlier record",
    "exact_response": "same normalized response as an earlier record",
    "near_question": "question near-duplicate (MinHash LSH, Jaccard >~ {t})",
    "near_response": "response near-duplicate (MinHash LSH, Jaccard >~ {t})",
}


class Deduper:
    """Streams records through exact and near-duplicate checks; keeps first occurrences in input order."""

    def __init__(self, config: DedupConfig | None = None, state: DedupState | None = None) -> None:
        self.config = config or DedupConfig()
        if state is None:
            state = DedupState.empty(self.config)
        else:
            state.check_compatible(self.config)
        self.state = state
        self.counts: Counter[str] = Counter()
        self.seen = 0
        self.kept = 0
        cfg = self.config
        self.minhasher = MinHasher(cfg.num_perm, cfg.seed, cfg.shingle_words)
        self.question_lsh = lsh_params(cfg.question_threshold, cfg.num_perm)
        self.response_lsh = lsh_params(cfg.response_threshold, cfg.num_perm)
        self._enabled: list[Kind] = [k for k in KINDS if getattr(cfg, k)]

    def run(self, records: Iterable[Record], on_reject: OnReject | None = None) -> Iterator[Record]:
        """Yield the records that are not duplicates of an earlier kept one (or of the loaded state)."""
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.config.batch_size:
                yield from self._process(batch, on_reject)
                batch = []
        if batch:
            yield from self._process(batch, on_reject)

    # -- internals -----------------------------------------------------------------------------------------
    def _keys(self, batch: list[Record]) -> dict[Kind, tuple[U64, npt.NDArray[np.bool_]]]:
        """Per kind: keys (n,) for exact kinds or (n, bands) for near kinds, and which records take part."""
        cfg = self.config
        n = len(batch)
        out: dict[Kind, tuple[U64, npt.NDArray[np.bool_]]] = {}
        questions = [normalize_text(r.question) for r in batch]
        responses = [normalize_text(r.response or "") for r in batch]
        long_resp = np.array([_words(t) >= cfg.response_min_words for t in responses], dtype=bool)
        if cfg.exact_pair:
            keys = np.array(
                [
                    _xxh(normalize_text(r.system_prompt) + "\x00" + q)
                    for r, q in zip(batch, questions, strict=True)
                ],
                dtype=np.uint64,
            )
            out["exact_pair"] = (keys, np.ones(n, dtype=bool))
        if cfg.exact_question:
            out["exact_question"] = (
                np.array([_xxh(q) for q in questions], dtype=np.uint64),
                np.ones(n, dtype=bool),
            )
        if cfg.exact_response:
            keys = np.array(
                [_xxh(t) if ok else 0 for t, ok in zip(responses, long_resp, strict=True)], dtype=np.uint64
            )
            out["exact_response"] = (keys, long_resp)
        if cfg.near_question:
            long_q = np.array([_words(q) >= cfg.question_min_words for q in questions], dtype=bool)
            sig, has = self.minhasher.signatures(
                [q if ok else "" for q, ok in zip(questions, long_q, strict=True)], True
            )
            out["near_question"] = (self.minhasher.band_keys(sig, *self.question_lsh), long_q & has)
        if cfg.near_response:
            sig, has = self.minhasher.signatures(
                [t if ok else "" for t, ok in zip(responses, long_resp, strict=True)], True
            )
            out["near_response"] = (self.minhasher.band_keys(sig, *self.response_lsh), long_resp & has)
        return out

    def _process(self, batch: list[Record], on_reject: OnReject | None) -> Iterator[Record]:
        keys = self._keys(batch)
        kinds = [k for k in self._enabled if k in keys]
        rows: dict[Kind, list[list[int]]] = {}
        prior: dict[Kind, list[bool]] = {}
        active: dict[Kind, list[bool]] = {}
        for kind in kinds:
            k, act = keys[kind]
            # Hits against everything kept before this batch (vectorized) ...
            hit = self.state.sets[kind].contains_many(k.reshape(-1)).reshape(k.shape)
            prior[kind] = ((hit.any(axis=1) if hit.ndim == 2 else hit) & act).tolist()
            rows[kind] = k.reshape(len(batch), -1).tolist()
            active[kind] = act.tolist()
        # ... and against records kept earlier in this batch (sequential, small Python sets).
        local: dict[Kind, set[int]] = {kind: set() for kind in kinds}
        for i, record in enumerate(batch):
            self.seen += 1
            dup: Kind | None = None
            for kind in kinds:
                if active[kind][i] and (prior[kind][i] or not local[kind].isdisjoint(rows[kind][i])):
                    dup = kind
                    break
            if dup is not None:
                self.counts[dup] += 1
                if on_reject is not None:
                    t = (
                        self.config.question_threshold
                        if dup == "near_question"
                        else self.config.response_threshold
                    )
                    on_reject(record, "dedup", dup, _DETAIL[dup].format(t=t))
                continue
            for kind in kinds:
                if active[kind][i]:
                    local[kind].update(rows[kind][i])
            self.kept += 1
            yield record
        for kind, values in local.items():
            self.state.sets[kind].add_many(np.fromiter(values, dtype=np.uint64, count=len(values)))
