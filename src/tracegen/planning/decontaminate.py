"""Decontamination: drop planned rows whose question overlaps an evaluation set, before anything is paid for.

FLAN overlaps with evaluation sets people report on (the Orca recipe already removes Big-Bench from T0 for
this reason). ``--decontaminate EVAL...`` names evaluation sets; the planner asks :meth:`Decontaminator.match`
about every eligible source row and leaves the matching ones out before sampling (so they never take a quota
slot, and the plan still holds ``--n`` rows when the source has enough).

An evaluation set spec is ``TARGET`` or ``TARGET:COL1,COL2``:

* ``TARGET`` is a ``.jsonl`` / ``.json`` / ``.parquet`` file, or a Hub dataset id ``owner/name`` (every split)
  or ``owner/name@split``;
* without columns every string column is used (lists of strings too, e.g. answer choices); with columns only
  those.

Matching, on normalised text (case-folded, every run of non-alphanumeric characters a single space):

* an item of at least ``ngram`` words (13 by default, as in GPT-3 / Llama practice) matches a question sharing
  at least ``min_matches`` of its word ``ngram``-grams;
* a shorter item matches a question equal to it (exact match: short strings such as "yes" or "Paris" would
  otherwise match everything).

Speed (a FLAN source has millions of rows, nearly all clean). ASCII text is normalised by one ``str.translate``
and ``split`` (the regex for the rest). A question shares an n-gram with an item only if it shares every
``anchor``-gram inside it (``anchor = ngram - stride + 1``, ``stride = ngram // 4 + 1``: 10 and 4 for 13-grams),
and one of those starts at a multiple of ``stride`` in the question; so :meth:`Decontaminator.match` first
looks up only those anchor-grams (a quarter of the positions, shorter tuples) in a set of every evaluation
anchor-gram hash. A question with none is clean; the rest get the full n-gram pass against a sorted array of
evaluation n-gram hashes (8 bytes + 4 for the item each), which decides exactly as a plain scan would: the
first of the question's n-grams held, reported with the first item holding it. Memory: ~80 bytes per distinct
evaluation anchor-gram (Python set) + 12 per n-gram. A false match still needs a 64-bit hash collision (of the
word-tuple hashes, ``hash()``); a collision in the prefilter only costs a full pass, never a verdict.
"""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, SourceError

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = [
    "DEFAULT_NGRAM",
    "Decontaminator",
    "EvalMatch",
    "decontamination_parameters",
    "load_eval_set",
    "normalize_words",
    "parse_spec",
]

DEFAULT_NGRAM = 13
_WORD = re.compile(r"[^\W_]+")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
_ITEM_CHARS = 300
"""How much of a matched item rejected.jsonl keeps."""


_ASCII_WORDS = str.maketrans({chr(c): chr(c).lower() if chr(c).isalnum() else " " for c in range(128)})
"""ASCII text: letters lower-cased, every other non-alphanumeric character a space (what ``_WORD`` keeps)."""


def normalize_words(text: str) -> list[str]:
    """Case-folded alphanumeric words: what matching compares (case, spacing and punctuation ignored)."""
    if text.isascii():  # casefold is lower() there; translate + split is ~2x faster than the regex
        return text.translate(_ASCII_WORDS).split()
    return _WORD.findall(text.casefold())


def _grams(words: list[str], n: int) -> Iterator[int]:
    return map(hash, zip(*(words[i:] for i in range(n)), strict=False))


def decontamination_parameters(config: RunConfig) -> dict[str, Any]:
    """What decides the drops (part of the plan fingerprint): the sets (with each file's sha256), thresholds."""
    sets: list[dict[str, Any]] = []
    for spec in config.decontaminate:
        target, _ = parse_spec(spec)
        path = Path(target)
        digest = None
        if path.is_file():
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
        sets.append({"spec": spec, "sha256": digest})
    return {
        "sets": sets,
        "ngram": config.decontaminate_ngram,
        "min_matches": config.decontaminate_min_matches,
    }


@dataclass(frozen=True, slots=True)
class EvalMatch:
    """Why a question was dropped: the evaluation set and the item it overlaps."""

    eval_set: str
    item: str
    """The evaluation item's text (first 300 characters)."""
    how: str
    """``ngram`` (shares ``ngram``-word sequences) or ``exact``."""

    def detail(self) -> str:
        kind = "shares word n-grams with" if self.how == "ngram" else "equals"
        return f"question {kind} an item of evaluation set {self.eval_set}"


def parse_spec(spec: str) -> tuple[str, list[str] | None]:
    """``TARGET[:COL1,COL2]`` -> (target, columns or None for every string column)."""
    target, sep, cols = spec.rpartition(":")
    if not sep or not target or "/" in cols or cols.endswith(_FILE_SUFFIXES):
        return spec, None
    columns = [c.strip() for c in cols.split(",") if c.strip()]
    if not columns:
        raise ConfigError(f"--decontaminate {spec!r}: no column after ':'; write PATH:col1,col2 or just PATH")
    return target, columns


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _rows_from_file(path: Path) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                yield from batch.to_pylist()
            return
        with path.open("rb") as f:
            head = f.read(4096).lstrip()
        if name.endswith(".json") and head.startswith((b"[", b"{")) and not _looks_like_jsonl(path):
            data = json.loads(path.read_bytes())
            rows = data if isinstance(data, list) else data.get("data", data.get("rows", [data]))
            for row in rows:
                if isinstance(row, dict):
                    yield row
            return
        with path.open("rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceError(
                        f"{path}:{lineno}: not JSON ({e.msg}); fix the line or remove it"
                    ) from None
                if isinstance(row, dict):
                    yield row
    except OSError as e:
        raise SourceError(f"{path}: cannot read evaluation set ({e.strerror})") from None
    except SourceError:
        raise
    except Exception as e:  # pyarrow / json errors on a broken file
        raise SourceError(f"{path}: not a readable evaluation set ({type(e).__name__}: {e})") from None


def _looks_like_jsonl(path: Path) -> bool:
    """A .json file holding one object per line (many eval sets ship like that)."""
    with path.open("rb") as f:
        first = f.readline().strip()
        second = f.readline().strip()
    if not second:
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _rows_from_hub(target: str) -> Iterator[dict[str, Any]]:
    import datasets

    repo_id, _, split = target.partition("@")
    try:
        loaded = datasets.load_dataset(repo_id, split=split or None)
    except Exception as e:  # datasets raises many types (offline, not found, gated)
        raise SourceError(
            f"--decontaminate {target!r}: Hub dataset could not be loaded ({type(e).__name__}: "
            f"{str(e)[:200]}); check the id, HF_TOKEN, or pass a local file"
        ) from None
    parts = loaded.values() if isinstance(loaded, dict) else [loaded]
    for part in parts:
        yield from part


def load_eval_set(spec: str) -> tuple[str, list[str]]:
    """(name, item texts) of one evaluation set spec (see the module docstring)."""
    target, columns = parse_spec(spec)
    path = Path(target)
    if path.is_file():
        rows = _rows_from_file(path)
    elif path.suffix.lower() in _FILE_SUFFIXES or path.exists():
        raise ConfigError(f"--decontaminate {spec!r}: {target} is not a readable .jsonl/.json/.parquet file")
    elif re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w.-]+)?", target):
        rows = _rows_from_hub(target)
    else:
        raise ConfigError(
            f"--decontaminate {spec!r}: no such file, and not a Hub id (owner/name); pass an evaluation "
            "set as a .jsonl/.json/.parquet file or a Hub dataset id, optionally :col1,col2"
        )
    items: list[str] = []
    seen_columns: set[str] = set()
    for row in rows:
        seen_columns.update(row)
        for col in columns if columns is not None else row:
            items.extend(s for s in _strings(row.get(col)) if s.strip())
    if columns is not None:
        missing = [c for c in columns if c not in seen_columns]
        if missing:
            raise ConfigError(
                f"--decontaminate {spec!r}: no column {', '.join(missing)} in {target} (columns: "
                f"{', '.join(sorted(seen_columns)) or 'none'})"
            )
    return target, items


@dataclass
class Decontaminator:
    """Answers "does this question overlap an evaluation item?" and counts the answers per evaluation set."""

    ngram: int = DEFAULT_NGRAM
    min_matches: int = 1
    sets: list[str] = field(default_factory=list)
    """Evaluation set names, in the order given."""
    items: list[tuple[int, str]] = field(default_factory=list)
    """(set index, text) of every indexed item."""
    _keys: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.empty(0, np.int64), repr=False, compare=False
    )
    """Sorted distinct ``ngram``-gram hashes (8 bytes each) ..."""
    _owners: npt.NDArray[np.int32] = field(
        default_factory=lambda: np.empty(0, np.int32), repr=False, compare=False
    )
    """... and, aligned, the index in ``items`` of the first item holding each (4 bytes)."""
    _new_grams: array[int] = field(default_factory=lambda: array("q"), repr=False, compare=False)
    """n-gram hashes of the items added since the arrays above were built (8 bytes each, no Python int) ..."""
    _new_owners: array[int] = field(default_factory=lambda: array("i"), repr=False, compare=False)
    """... and their items."""
    _anchors: set[int] = field(default_factory=set, repr=False)
    """Hashes of every evaluation ``anchor``-gram: the prefilter (see :meth:`match`)."""
    _exact: dict[int, int] = field(default_factory=dict, repr=False)
    """hash of a short item's word tuple -> index in ``items``."""
    _stride: int = field(init=False, repr=False)
    _anchor: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.min_matches < 1:
            raise ConfigError("decontaminate_ngram and decontaminate_min_matches must be at least 1")
        self._stride = self.ngram // 4 + 1
        self._anchor = self.ngram - self._stride + 1

    @classmethod
    def from_specs(
        cls, specs: Iterable[str], *, ngram: int = DEFAULT_NGRAM, min_matches: int = 1
    ) -> Decontaminator:
        """Load and index every evaluation set named by ``specs``."""
        dec = cls(ngram=ngram, min_matches=min_matches)
        for spec in specs:
            name, texts = load_eval_set(spec)
            dec.add(name, texts)
        dec._fold()
        return dec

    def add(self, name: str, texts: Iterable[str]) -> None:
        """Index the items of one evaluation set."""
        set_index = len(self.sets)
        self.sets.append(name)
        n = self.ngram
        grams, owners = self._new_grams, self._new_owners
        for text in texts:
            words = normalize_words(text)
            if not words:
                continue
            item_index = len(self.items)
            self.items.append((set_index, text[:_ITEM_CHARS]))
            if len(words) >= n:
                grams.extend(_grams(words, n))
                owners.extend(repeat(item_index, len(words) - n + 1))
                self._anchors.update(_grams(words, self._anchor))
            else:
                self._exact.setdefault(hash(tuple(words)), item_index)

    def _fold(self) -> None:
        """Sort the n-grams added since the last call into ``_keys`` / ``_owners`` (once, not per set)."""
        if not self._new_grams:
            return
        keys = np.frombuffer(self._new_grams, dtype=np.int64)
        owners = np.frombuffer(self._new_owners, dtype=np.int32)
        if len(self._keys):
            keys, owners = np.concatenate([self._keys, keys]), np.concatenate([self._owners, owners])
        self._new_grams, self._new_owners = array("q"), array("i")
        # np.unique sorts stably when asked for indices: a gram keeps the first item that held it
        self._keys, first = np.unique(keys, return_index=True)
        self._owners = owners[first]

    @property
    def ngrams_indexed(self) -> int:
        """Distinct evaluation n-grams held."""
        self._fold()
        return len(self._keys)

    @property
    def size(self) -> dict[str, int]:
        """Items indexed per evaluation set."""
        counts = dict.fromkeys(self.sets, 0)
        for set_index, _ in self.items:
            counts[self.sets[set_index]] += 1
        return counts

    def match(self, question: str) -> EvalMatch | None:
        """The evaluation item ``question`` overlaps, or None.

        A question sharing an ``ngram``-gram with an item also shares every shorter gram inside it; with
        ``anchor = ngram - stride + 1``, one of the ``stride`` anchor-grams inside a shared n-gram starts at a
        multiple of ``stride`` in the question. So only the question's anchor-grams at those positions are
        looked up (a quarter of the grams, each shorter); a question with none of them in ``_anchors``
        shares no n-gram. The rest (rare) get the full pass, which decides as before.
        """
        words = normalize_words(question)
        n = self.ngram
        if len(words) < n:
            item_index = self._exact.get(hash(tuple(words)))
            return None if item_index is None else self._match(item_index, "exact")
        m, k = self._anchor, self._stride
        if self._anchors.isdisjoint(map(hash, zip(*(words[j::k] for j in range(m)), strict=False))):
            return None
        return self._ngram_match(words)

    def _ngram_match(self, words: list[str]) -> EvalMatch | None:
        """The full pass: the first of the question's n-grams held (or ``min_matches`` of one item's)."""
        self._fold()
        row = list(_grams(words, self.ngram))
        hashes = np.array(row, dtype=np.int64)
        where = np.searchsorted(self._keys, hashes).clip(0, max(len(self._keys) - 1, 0))
        held = self._keys[where] == hashes if len(self._keys) else np.zeros(len(row), bool)
        grams = {row[i]: int(self._owners[where[i]]) for i in np.flatnonzero(held).tolist()}
        if not grams:
            return None
        if self.min_matches == 1:
            return self._match(grams[next(g for g in row if g in grams)], "ngram")
        hits: dict[int, int] = {}
        for g in set(row):  # the order the counting always used
            hit = grams.get(g)
            if hit is not None:
                hits[hit] = hits.get(hit, 0) + 1
                if hits[hit] >= self.min_matches:
                    return self._match(hit, "ngram")
        return None

    def _match(self, item_index: int, how: str) -> EvalMatch:
        set_index, text = self.items[item_index]
        return EvalMatch(eval_set=self.sets[set_index], item=text, how=how)
