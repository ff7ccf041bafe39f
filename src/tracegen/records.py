"""The one record type that flows through tracegen.

A :class:`Record` is born in the plan (a FLAN prompt paired with a system message), is answered by the
teacher (response fields filled in), is judged by filters (``agrees_with_target``) and is exported.
Dicts exist only at the edges (readers, writers): :meth:`Record.to_dict` / :meth:`Record.from_dict`.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass, fields
from typing import Any

import xxhash

__all__ = ["SUBMIXES", "Record", "content_key"]

#: The FLAN v2 submixes tracegen samples from, in OpenOrca id-prefix spelling.
SUBMIXES: tuple[str, ...] = ("cot", "niv", "flan", "t0")


def content_key(system_prompt: str, question: str) -> str:
    """Stable hash of what the teacher is asked (system message + question), hex, 32 chars."""
    h = hashlib.blake2b(digest_size=16)
    h.update(system_prompt.encode("utf-8"))
    h.update(b"\x00")
    h.update(question.encode("utf-8"))
    return h.hexdigest()


@dataclass(slots=True)
class Record:
    """One (system message, FLAN prompt) pair and, once answered, the teacher's answer."""

    # --- planned ---------------------------------------------------------------------------------------
    id: str
    """OpenOrca-style id ``{submix}.{n}``, stable for the same source and seed."""
    submix: str
    """cot | niv | flan | t0."""
    question: str
    """The FLAN ``inputs`` text, sent as the user message."""
    system_prompt: str = ""
    """The system message the teacher sees ("" = none sent: Orca message 1)."""
    system_message_id: int | None = None
    """Orca Table 2 id (1-16), or None for a user template."""
    train_system_prompt: str | None = None
    """Prompt erasure (Orca 2): the system message the student is trained with, if different."""
    task_name: str = ""
    template_type: str = ""
    target: str = ""
    """FLAN's reference answer."""
    key: str = ""
    """content_key(system_prompt, question); filled in by __post_init__ when empty."""
    prompt_tokens: int = 0
    """Prompt tokens as the API bills them (chat overhead included), counted before sending."""
    source: str = ""
    """Where the prompt came from: ``file:line`` or ``dataset[row]``."""
    # --- answered --------------------------------------------------------------------------------------
    stage: str = ""
    model: str = ""
    """Teacher model as requested."""
    model_returned: str = ""
    """Teacher model as the API named it in the response."""
    response: str | None = None
    completion_tokens: int = 0
    cost_usd: float = 0.0
    finish_reason: str | None = None
    agrees_with_target: bool | None = None
    reasoning_tokens: int = 0
    """Hidden reasoning tokens of the answer (reasoning models), billed as output, part of completion_tokens."""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = content_key(self.system_prompt, self.question)

    def messages(self) -> list[dict[str, str]]:
        """The chat messages sent to the teacher. Orca message 1 (empty) sends no system role."""
        if self.system_prompt:
            return [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.question},
            ]
        return [{"role": "user", "content": self.question}]

    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order (plain values: 25x faster than dataclasses.asdict)."""
        return {name: getattr(self, name) for name in _FIELD_ORDER}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Build from a dict, ignoring keys this version does not know (forward compatible files)."""
        return cls(**{name: data[name] for name in _FIELD_ORDER if name in data})


_FIELD_ORDER: tuple[str, ...] = tuple(f.name for f in fields(Record))


# ---- normalization and exact keys: the plan's pre-send dedup and the clean step's dedup agree --------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """NFKC, casefold, whitespace collapsed: the form exact dedup compares."""
    if text.isascii():  # NFKC leaves ASCII as it is, and casefold is lower there
        return " ".join(text.lower().split())
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> int:
    """64-bit xxh3 of the normalized text, as a Python int in [0, 2**64)."""
    return _xxh(normalize_text(text))


def pair_hash(system_prompt: str, question: str) -> int:
    """The ``exact_pair`` key: 64-bit xxh3 of the normalized system message and question."""
    return _xxh(normalize_recurring(system_prompt) + "\x00" + normalize_text(question))


@functools.lru_cache(maxsize=256)
def normalize_recurring(text: str) -> str:
    """normalize_text of a text that recurs on many rows (the few system messages), computed once."""
    return normalize_text(text)


def _xxh(normalized: str) -> int:
    return int(xxhash.xxh3_64_intdigest(normalized.encode("utf-8")))
