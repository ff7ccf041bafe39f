"""Source rows: the normalised row type, rejections, and column normalisation (:func:`normalize_row`).

The column spellings and the rules for rows without ``task_source`` are described in
:mod:`tracegen.planning.sources`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..errors import BadRecordError

__all__ = [
    "META_COLUMNS",
    "BadRecordReason",
    "RejectCallback",
    "Rejection",
    "SourceRow",
    "SourceStats",
    "normalize_row",
    "submix_for_task_source",
]

#: Columns that say which task a row belongs to (what :meth:`Source.iter_task_keys` reads).
META_COLUMNS: tuple[str, ...] = (
    "task_source",
    "_task_source",
    "task_name",
    "_task_name",
    "template_type",
    "_template_type",
    "task",
)

_TASK_SOURCE_TO_SUBMIX = {
    "cot": "cot",
    "niv2": "niv",
    "niv": "niv",
    "flan2021": "flan",
    "flan": "flan",
    "p3": "t0",
    "t0": "t0",
    "dialog": "dialog",
}
_TEMPLATE_TYPES = {"zsopt": "zs_opt", "zsnoopt": "zs_noopt", "fsopt": "fs_opt", "fsnoopt": "fs_noopt"}
_TEMPLATE_IN_PATH = re.compile(r"(?<![a-z])(zs|fs)_?(opt|noopt)(?![a-z])")

BadRecordReason = Literal[
    "malformed_json", "missing_field", "not_a_string", "empty_question", "unknown_value", "line_too_long"
]


class SourceRow(NamedTuple):
    """One FLAN v2 prompt row, normalised (immutable).

    A named tuple, not a frozen dataclass: planning makes one per source row, and a frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` per field) costs about three times as much.
    """

    question: str
    """FLAN ``inputs``: the user message."""
    target: str
    """FLAN ``targets``: the reference answer."""
    submix: str
    """cot | niv | flan | t0 (Dialog rows never become SourceRows)."""
    task_name: str
    template_type: str
    """zs_opt | zs_noopt | fs_opt | fs_noopt."""
    where: str
    """Provenance: ``file:line`` (1-based), ``file[row]`` or ``hub_id[row]`` (0-based)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One line of ``rejected.jsonl``: a row some stage refused, and why."""

    id: str
    """The Record id, or for stage ``source`` the row's provenance (``file:line``)."""
    stage: str
    reason: str
    detail: str
    record: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "record": self.record,
        }


RejectCallback = Callable[[Rejection], None]


@dataclass(slots=True)
class SourceStats:
    """What one pass over the sources saw."""

    rows_read: int = 0
    """Every row or line holding data, good or bad."""
    bad_records: int = 0
    dialog_skipped: int = 0


class _Bad(Exception):
    """Internal: a malformed row (becomes BadRecordError or a Rejection)."""

    def __init__(self, reason: BadRecordReason, field: str, problem: str, raw: str | None = None) -> None:
        super().__init__(problem)
        self.reason: BadRecordReason = reason
        self.field = field
        self.problem = problem
        self.raw = raw


# ---- normalisation ---------------------------------------------------------------------------------------
def submix_for_task_source(task_source: str) -> str | None:
    """cot | niv | flan | t0 | dialog for a FLAN ``task_source`` value (case-insensitive), else None."""
    return _TASK_SOURCE_TO_SUBMIX.get(task_source.strip().lower())


def _submix_for_task(task: str) -> str | None:
    known = submix_for_task_source(task)
    if known is not None:
        return known
    name = task.strip()
    if re.match(r"^task\d+_", name):
        return "niv"
    if name.startswith(("cot_", "stream_")):
        return "cot"
    if re.search(r":\d+\.\d+\.\d+$", name):
        return "flan"
    return None


def _pick(raw: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
    for name in names:
        if name in raw and raw[name] is not None:
            return name, raw[name]
    return None


def _text(raw: Mapping[str, Any], names: Sequence[str], *, required: bool = True) -> str | None:
    found = _pick(raw, names)
    if found is None:
        if required:
            raise _Bad("missing_field", names[0], f"is missing (looked for {', '.join(names)})")
        return None
    name, value = found
    if not isinstance(value, str):
        raise _Bad("not_a_string", name, f"must be a string, got {type(value).__name__}")
    return value


def _template_from_path(path_hint: str) -> str | None:
    m = _TEMPLATE_IN_PATH.search(path_hint.lower())
    return f"{m.group(1)}_{m.group(2)}" if m else None


_FAST_SOURCE = {"CoT": "cot", "NIv2": "niv", "Flan2021": "flan", "P3": "t0", "T0": "t0", "Dialog": "dialog"}
_CANONICAL_TEMPLATES = frozenset(_TEMPLATE_TYPES.values())


def _normalize(raw: Mapping[str, Any], where: str, path_hint: str) -> SourceRow | None:
    """A SourceRow, or None for a Dialog row. Raises _Bad."""
    # fast path: the published spellings, all fields present and well formed (same result as below)
    get = raw.get
    source = get("task_source") or get("_task_source")
    submix = _FAST_SOURCE.get(source) if type(source) is str else None
    if submix == "dialog":
        return None
    if submix is not None:
        question, target = get("inputs"), get("targets")
        task_name = get("task_name") or get("_task_name")
        template = get("template_type") or get("_template_type")
        if (
            type(question) is str
            and type(target) is str
            and type(task_name) is str
            and template in _CANONICAL_TEMPLATES
            and question.strip()
        ):
            return SourceRow(question, target, submix, task_name, template, where)
    return _normalize_slow(raw, where, path_hint)


def _normalize_slow(raw: Mapping[str, Any], where: str, path_hint: str) -> SourceRow | None:
    task_source = _text(raw, ("task_source", "_task_source"), required=False)
    task = _text(raw, ("task",), required=False)
    if task_source is not None:
        submix = submix_for_task_source(task_source)
        if submix is None:
            raise _Bad(
                "unknown_value",
                "task_source",
                f"has unknown value {task_source[:60]!r} (expected CoT, NIv2, Flan2021, P3/T0 or Dialog)",
            )
    elif task is not None:
        submix = _submix_for_task(task)
        if submix is None:
            raise _Bad(
                "unknown_value",
                "task",
                f"value {task[:60]!r} names no FLAN submix (expected cot, niv2, flan, t0, dialog or a "
                "task name like task123_..., cot_..., name:1.0.0); add a task_source column",
            )
    else:
        raise _Bad("missing_field", "task_source", "is missing (looked for task_source, _task_source, task)")
    if submix == "dialog":
        return None
    question = _text(raw, ("inputs", "input", "source"))
    assert question is not None
    if not question.strip():
        raise _Bad("empty_question", "inputs", "is empty")
    target = _text(raw, ("targets", "target"))
    assert target is not None
    task_name = _text(raw, ("task_name", "_task_name"), required=False)
    if task_name is None:
        if task is None:
            raise _Bad("missing_field", "task_name", "is missing (looked for task_name, _task_name, task)")
        task_name = task
    template_raw = _text(raw, ("template_type", "_template_type"), required=False)
    if template_raw is None:
        template = _template_from_path(path_hint)
        if template is None:
            raise _Bad(
                "missing_field",
                "template_type",
                "is missing (looked for template_type, _template_type, and a zs_opt/zs_noopt/fs_opt/"
                "fs_noopt hint in the file name)",
            )
    else:
        template = _TEMPLATE_TYPES.get(re.sub(r"[^a-z]", "", template_raw.lower()), "")
        if not template:
            raise _Bad(
                "unknown_value",
                "template_type",
                f"has unknown value {template_raw[:40]!r} (expected zs_opt, zs_noopt, fs_opt or fs_noopt)",
            )
    return SourceRow(
        question=question,
        target=target,
        submix=submix,
        task_name=task_name,
        template_type=template,
        where=where,
    )


def normalize_row(raw: Mapping[str, Any], where: str, path_hint: str = "") -> SourceRow | None:
    """Normalise one raw row; None for a Dialog row; BadRecordError (naming ``where`` and field) if bad."""
    try:
        return _normalize(raw, where, path_hint)
    except _Bad as e:
        raise BadRecordError(where, e.field, e.problem) from None


@functools.lru_cache(maxsize=256)
def _template_type(template_raw: str) -> str | None:
    """The canonical template type a ``template_type`` value spells (a few distinct values per source)."""
    return _TEMPLATE_TYPES.get(re.sub(r"[^a-z]", "", template_raw.lower()))


def _task_key(raw: Mapping[str, Any], path_hint: str) -> tuple[str, str, str] | None:
    """(submix, task_name, template_type) from the metadata columns, or None (Dialog, malformed)."""
    get = raw.get
    source = get("task_source") or get("_task_source")
    task = get("task")
    # fast path: the published spellings (the same result as below)
    submix = _FAST_SOURCE.get(source) if type(source) is str else None
    if submix is not None and submix != "dialog":
        name = get("task_name") or get("_task_name") or task
        template_raw = get("template_type") or get("_template_type")
        if type(name) is str and template_raw in _CANONICAL_TEMPLATES:
            return (submix, name, template_raw)
    if isinstance(source, str):
        submix = submix_for_task_source(source)
    elif isinstance(task, str):
        submix = _submix_for_task(task)
    else:
        return None
    name = raw.get("task_name") or raw.get("_task_name") or task
    if submix is None or submix == "dialog" or not isinstance(name, str):
        return None
    template_raw = raw.get("template_type") or raw.get("_template_type")
    if isinstance(template_raw, str):
        template = _template_type(template_raw)
    else:
        template = _template_from_path(path_hint)
    return (submix, name, template) if template else None
