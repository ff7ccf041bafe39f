"""What the report takes from every row of a ``clean.jsonl``, noted by the export, which parses each row anyway.

A run exports and then writes its report in the same process: with this note the report parses only the few
rows its sample shows instead of the whole file again. The note holds one file's counts (bounded memory) and
is keyed by the file's identity (device, inode, size, modification time): a file written since, or another
file, is read in full as before. Nothing is kept across processes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cleaning.handoff import Identity, file_identity

__all__ = ["CleanDigest", "file_identity", "note", "noted", "verdict"]


def verdict(agrees: Any) -> str:
    """The answer check's word for ``agrees_with_target``."""
    return "agrees" if agrees is True else "disagrees" if agrees is False else "unknown"


@dataclass(frozen=True)
class CleanDigest:
    """The rows of one clean.jsonl, each a JSON object, none unreadable (the export refuses such a file)."""

    identity: Identity
    rows: int
    """Non-blank lines."""
    verdicts: Counter[tuple[str, str]]
    """Rows per (submix, verdict), in first-seen order (the order the report's counters take keys in)."""


_noted: CleanDigest | None = None


def note(digest: CleanDigest) -> None:
    """Keep ``digest`` for the report (replacing any other)."""
    global _noted
    _noted = digest


def noted(path: Path) -> CleanDigest | None:
    """The digest of ``path`` if one was noted for the file as it is now."""
    digest = _noted
    if digest is None or file_identity(path) != digest.identity:
        return None
    return digest
