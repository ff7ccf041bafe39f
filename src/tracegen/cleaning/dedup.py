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

The MinHash/LSH machinery (:class:`HashSet64`, :class:`MinHasher`, :func:`lsh_params`) lives in
:mod:`tracegen.cleaning.minhash`; this module is the dedup step and re-exports them.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..clean_config import DedupConfig
from ..errors import ConfigError, RunDirError
from ..records import Record, _xxh, normalize_recurring, normalize_text, pair_hash, text_hash
from ..rundir import atomic_write_bytes
from .minhash import U64, HashSet64, MinHasher, lsh_params

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

    def run(
        self,
        records: Iterable[Record],
        on_reject: OnReject | None = None,
        known: Callable[[Record], bytes | None] | None = None,
    ) -> Iterator[Record]:
        """Yield the records that are not duplicates of an earlier kept one (or of the loaded state).

        ``known(record)``: the record's keys from :meth:`packed_keys` if computed earlier, else None.
        """
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.config.batch_size:
                yield from self._process(batch, on_reject, known)
                batch = []
        if batch:
            yield from self._process(batch, on_reject, known)

    def packed_keys(self, batch: list[Record]) -> list[bytes]:
        """Each record's keys, computed now for a later :meth:`run` (``known``): key rows, then take-part flags."""
        n = len(batch)
        if n == 0:
            return []
        keys = self._keys(batch)
        kinds = [k for k in self._enabled if k in keys]
        cols = [keys[k][0].reshape(n, -1) for k in kinds] + [keys[k][1].reshape(n, 1) for k in kinds]
        if not cols:
            return [b""] * n
        table = np.ascontiguousarray(np.hstack([c.astype(np.uint64) for c in cols]))
        assert table.shape[1] == sum(self._widths()) + len(kinds)
        return [row.tobytes() for row in table]

    def _widths(self) -> list[int]:
        near = {"near_question": self.question_lsh[0], "near_response": self.response_lsh[0]}
        return [near.get(k, 1) for k in self._enabled]

    def _unpack(self, packed: list[bytes]) -> dict[Kind, tuple[U64, npt.NDArray[np.bool_]]]:
        table = np.frombuffer(b"".join(packed), dtype=np.uint64).reshape(len(packed), -1)
        widths = self._widths()
        flags = sum(widths)
        out: dict[Kind, tuple[U64, npt.NDArray[np.bool_]]] = {}
        col = 0
        for j, (kind, width) in enumerate(zip(self._enabled, widths, strict=True)):
            out[kind] = (table[:, col : col + width], table[:, flags + j].astype(bool))
            col += width
        return out

    def _keys_for(
        self, batch: list[Record], known: Callable[[Record], bytes | None] | None
    ) -> dict[Kind, tuple[U64, npt.NDArray[np.bool_]]]:
        """The batch's keys: those computed earlier (``known``), the rest now."""
        packed = [known(r) for r in batch] if known is not None else []
        missing = [i for i, p in enumerate(packed) if p is None]
        if known is None or len(missing) == len(batch):
            return self._keys(batch)
        for i, p in zip(missing, self.packed_keys([batch[i] for i in missing]), strict=True):
            packed[i] = p
        return self._unpack([p for p in packed if p is not None])

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
                    _xxh(normalize_recurring(r.system_prompt) + "\x00" + q)
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

    def _process(
        self,
        batch: list[Record],
        on_reject: OnReject | None,
        known: Callable[[Record], bytes | None] | None = None,
    ) -> Iterator[Record]:
        keys = self._keys_for(batch, known)
        kinds = [k for k in self._enabled if k in keys]
        # Per kind: (kind, takes part?, hit before this batch?, its keys, keys kept earlier in this batch).
        checks: list[tuple[Kind, list[bool], list[bool], list[list[int]], set[int]]] = []
        for kind in kinds:
            k, act = keys[kind]
            # Hits against everything kept before this batch (vectorized) ...
            hit = self.state.sets[kind].contains_many(k.reshape(-1)).reshape(k.shape)
            prior = ((hit.any(axis=1) if hit.ndim == 2 else hit) & act).tolist()
            checks.append((kind, act.tolist(), prior, k.reshape(len(batch), -1).tolist(), set()))
        # ... and against records kept earlier in this batch (sequential, small Python sets).
        for i, record in enumerate(batch):
            self.seen += 1
            dup: Kind | None = None
            for kind, active, prior, rows, local in checks:
                if active[i] and (prior[i] or not local.isdisjoint(rows[i])):
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
            for _, active, _, rows, local in checks:
                if active[i]:
                    local.update(rows[i])
            self.kept += 1
            yield record
        for kind, _, _, _, values in checks:
            self.state.sets[kind].add_many(np.fromiter(values, dtype=np.uint64, count=len(values)))
