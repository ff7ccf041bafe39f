"""The clean step's settings: ``filters:`` and ``dedup:`` of a run config, as typed models.

Config-side on purpose: :class:`tracegen.config.RunConfig` holds them as sub-models (validated when the config
is loaded, so a typo fails before anything is paid for), and the clean step (:mod:`tracegen.filters`,
:mod:`tracegen.dedup`, :mod:`tracegen.postprocess`) reads them. Both reject unknown keys.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DedupConfig", "FilterConfig"]


class FilterConfig(BaseModel):
    """Which quality filters run and how. Defaults = OpenOrca's cleaning (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    empty: bool = Field(default=True, description="Drop missing / whitespace-only responses.")
    too_short: bool = Field(default=True, description="Drop responses shorter than min_response_chars.")
    min_response_chars: int = Field(default=10, ge=1, description="OpenOrca: 10 characters.")
    min_chars_only_with_system: bool = Field(
        default=True, description="OpenOrca applied the length rule only when a system message was set."
    )
    truncated: bool = Field(default=True, description="Drop finish_reason == 'length' answers.")
    refusal: bool = Field(default=True, description="Drop answers containing a refusal/alignment phrase.")
    refusal_file: Path | None = Field(
        default=None, description="Phrase list (YAML); default prompts/refusals.yaml."
    )
    extra_refusal_phrases: list[str] = Field(default_factory=list, description="Added to the list.")
    not_enough_information: bool = Field(default=True, description="OpenOrca: drop 'not enough information'.")
    not_enough_information_phrases: list[str] = Field(default_factory=lambda: ["not enough information"])
    keep_not_enough_information_if_target: bool = Field(
        default=False, description="Keep the row when FLAN's own target says so too (OpenOrca did not)."
    )
    asks_question: bool = Field(
        default=True, description="Drop answers ending in '?' to a prompt that asked none."
    )
    asks_question_exempt_markers: list[str] = Field(
        default_factory=lambda: ["question", "?"],
        description="Question text containing any of these (case-insensitive) exempts the row.",
    )
    answer_disagrees: bool = Field(default=False, description="Drop rows whose answer check says False.")

    def public_dict(self) -> dict[str, object]:
        """JSON-able settings for stats and the dataset card."""
        data = self.model_dump(mode="json")
        if self.refusal_file is not None:  # a file name, not a local path, goes into stats and the card
            data["refusal_file"] = self.refusal_file.name
        return data


class DedupConfig(BaseModel):
    """Which duplicates are removed and how near is near. Defaults are documented in the module docstring."""

    model_config = ConfigDict(extra="forbid")

    exact_pair: bool = Field(default=True, description="Same system message + question.")
    exact_question: bool = Field(default=True, description="Same question (OpenOrca).")
    exact_response: bool = Field(default=True, description="Same response (long responses only).")
    near_question: bool = Field(default=False, description="MinHash LSH on questions (off: FLAN passages).")
    near_response: bool = Field(default=True, description="MinHash LSH on responses.")
    question_threshold: float = Field(default=0.9, gt=0, lt=1, description="Jaccard threshold, questions.")
    response_threshold: float = Field(default=0.85, gt=0, lt=1, description="Jaccard threshold, responses.")
    response_min_words: int = Field(default=20, ge=1, description="Shorter responses are never deduped.")
    question_min_words: int = Field(default=20, ge=1, description="Shorter questions skip near dedup.")
    num_perm: int = Field(default=128, ge=8, le=1024, description="MinHash permutations.")
    shingle_words: int = Field(default=5, ge=1, le=16, description="Words per shingle.")
    seed: int = Field(default=1, ge=0, description="MinHash permutation seed (datasketch's default 1).")
    batch_size: int = Field(default=2048, ge=1, description="Records hashed together (numpy batch).")
