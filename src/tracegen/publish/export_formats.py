"""Export formats: each format's explicit features and how a :class:`~tracegen.records.Record` becomes a row.

See :mod:`tracegen.publish.export` for what each format is for; this module holds their definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..records import Record
from .features import Features, List, Value

if TYPE_CHECKING:
    import datasets

__all__ = ["DEFAULT_FORMAT", "FORMATS", "Format", "features_for"]

DEFAULT_FORMAT = "openorca"

_S = Value("string")


RecordDict = Mapping[str, Any]
"""A record as :meth:`Record.to_dict` spells it (every field): what the export turns into rows."""


def _system_for_training(r: RecordDict) -> str:
    """Prompt erasure: the student's system message when the template set gives one, else the teacher's."""
    train: str | None = r["train_system_prompt"]
    system: str = r["system_prompt"]
    return train if train is not None else system


def _row_openorca(r: RecordDict) -> dict[str, Any]:
    return {
        "id": r["id"],
        "system_prompt": _system_for_training(r),
        "question": r["question"],
        "response": r["response"],
    }


def _row_alpaca(r: RecordDict) -> dict[str, Any]:
    return {"instruction": _system_for_training(r), "input": r["question"], "output": r["response"]}


def _row_sharegpt(r: RecordDict) -> dict[str, Any]:
    system = _system_for_training(r)
    turns: list[dict[str, str | None]] = [{"from": "system", "value": system}] if system else []
    turns += [{"from": "human", "value": r["question"]}, {"from": "gpt", "value": r["response"]}]
    return {"conversations": turns}


def _row_messages(r: RecordDict) -> dict[str, Any]:
    system = _system_for_training(r)
    turns: list[dict[str, str | None]] = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["response"]}]
    return {"messages": turns}


_FULL_COLUMNS: dict[str, Value] = {
    "id": _S,
    "submix": _S,
    "system_prompt": _S,
    "train_system_prompt": _S,
    "system_message_id": Value("int32"),
    "question": _S,
    "response": _S,
    "target": _S,
    "agrees_with_target": Value("bool"),
    "task_name": _S,
    "template_type": _S,
    "source": _S,
    "stage": _S,
    "model": _S,
    "model_returned": _S,
    "finish_reason": _S,
    "prompt_tokens": Value("int64"),
    "completion_tokens": Value("int64"),
    "cost_usd": Value("float64"),
    "key": _S,
}
_FULL_NAMES = tuple(_FULL_COLUMNS)
_full_values = itemgetter(*_FULL_NAMES)


def _row_full(r: RecordDict) -> dict[str, Any]:
    return dict(zip(_FULL_NAMES, _full_values(r), strict=True))  # the columns in order, picked in C


@dataclass(frozen=True)
class Format:
    """One export format: its explicit features and how a record (as a dict) becomes a row."""

    name: str
    features: Features
    row_of_dict: Callable[[RecordDict], dict[str, Any]]
    """The row of a record dict (:meth:`Record.to_dict`'s keys): what the export calls, no Record built."""
    description: str

    def row(self, r: Record) -> dict[str, Any]:
        """The row of ``r``."""
        return self.row_of_dict(r.to_dict())


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "openorca",
            Features({"id": _S, "system_prompt": _S, "question": _S, "response": _S}),
            _row_openorca,
            "id, system_prompt, question, response — the Open-Orca/OpenOrca columns",
        ),
        Format(
            "full",
            Features(_FULL_COLUMNS),
            _row_full,
            "every record field: provenance, FLAN target, answer check, tokens, cost",
        ),
        Format(
            "alpaca",
            Features({"instruction": _S, "input": _S, "output": _S}),
            _row_alpaca,
            "instruction (system message), input (question), output (response) — as Dolphin",
        ),
        Format(
            "sharegpt",
            Features({"conversations": List({"from": _S, "value": _S})}),
            _row_sharegpt,
            "conversations: [{from: system|human|gpt, value}] — as SlimOrca",
        ),
        Format(
            "messages",
            Features({"messages": List({"role": _S, "content": _S})}),
            _row_messages,
            "messages: [{role: system|user|assistant, content}] — TRL's conversational format (SFTTrainer)",
        ),
    )
}


def features_for(fmt: str) -> datasets.Features:
    """The explicit ``datasets.Features`` of an export format (imports ``datasets``; export itself does not)."""
    import datasets

    return datasets.Features.from_dict(_format(fmt).features.to_dict())


def _format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown export format {name!r}; choose from {', '.join(FORMATS)} (--format)"
        ) from None
