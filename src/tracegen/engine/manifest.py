"""When a run directory's manifest binds, and the refusal of a changed setting.

The manifest binds once the directory has spent money (:func:`money_spent`); then a changed plan parameter or
teacher setting is refused with :class:`~tracegen.errors.SettingChangedError` naming the field and both ways
out (see :meth:`tracegen.engine.store.RunDir.open`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import SettingChangedError
from ..rundir import RunPaths
from .budget import Ledger, prior_spend_usd, utc_now_iso

__all__ = ["REHEARSAL_BASE_URL", "TEACHER_FIELDS", "money_spent"]

#: Config fields that decide what the teacher answers: changing them mixes two datasets in one directory.
TEACHER_FIELDS: tuple[str, ...] = (
    "model",
    "base_url",
    "temperature",
    "top_p",
    "max_tokens",
    "reasoning_effort",
)

#: The base_url a rehearsal (``--rehearse``) pins in the manifest, so fake answers never mix with real ones.
REHEARSAL_BASE_URL = "tracegen-rehearsal (built-in fake server)"


def money_spent(path: Path) -> str | None:
    """What makes the manifest of ``path`` binding, in words ("spent $1.23"), or None when nothing was paid.

    Money counts once the budget ledger shows spend, answers exist, or Batch API jobs were created, in the
    directory or in one of its stages (``stages/*/``).
    """
    dirs = [RunPaths(path)]
    stages = dirs[0].stages
    if stages.is_dir():
        dirs += [RunPaths(p) for p in sorted(stages.iterdir()) if p.is_dir()]
    usd = 0.0
    answers = batches = False
    for d in dirs:
        usd += prior_spend_usd(Ledger(d.ledger).read())
        with contextlib.suppress(OSError):
            answers = answers or d.traces.stat().st_size > 0
        batches = batches or d.batches.exists()
    if usd > 0:
        return f"spent ${usd:,.4f}"
    if answers:
        return "holds answers"
    if batches:
        return "created Batch API jobs"
    return None


def _new_manifest(
    plan: Mapping[str, Any], teacher: Mapping[str, Any], config_public: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "tracegen_version": __version__,
        "created_at": utc_now_iso(),
        "plan_fingerprint": _fingerprint(plan),
        "plan_params": dict(plan),
        "teacher": dict(teacher),
        "config": dict(config_public or {}),
    }


def _same(manifest: Mapping[str, Any], plan: Mapping[str, Any] | None, teacher: Mapping[str, Any]) -> bool:
    old_teacher = manifest.get("teacher") or {}
    if teacher and any(teacher.get(k) != old_teacher.get(k) for k in TEACHER_FIELDS if k in old_teacher):
        return False
    return plan is None or dict(manifest.get("plan_params") or {}) == dict(plan)


def _changed(path: Path, spent: str, kind: str, name: str, old: Any, new: Any) -> SettingChangedError:
    """The refusal of a changed setting, with both ways out (the CLI adds the exact commands)."""
    if name == "base_url" and REHEARSAL_BASE_URL in (old, new):
        was = "a rehearsal (--rehearse)" if old == REHEARSAL_BASE_URL else f"the real teacher ({old!r})"
        cont = "without --rehearse" if old != REHEARSAL_BASE_URL else "with --rehearse"
        return SettingChangedError(
            f"{path}: this run directory {spent} as {was}; answers would mix",
            f"use a new --output-dir to start over, or rerun {cont} to continue",
            path=str(path),
            field="rehearse",
            old=old == REHEARSAL_BASE_URL,
            new=new == REHEARSAL_BASE_URL,
        )
    flag = "--" + name.replace("_", "-")
    return SettingChangedError(
        f"{path}: {kind} {name!r} changed ({old!r} -> {new!r}) after this run directory {spent}; answers "
        "would mix two settings",
        f"use a new --output-dir to start over, or rerun with {flag} {old!r} to continue",
        path=str(path),
        field=name,
        old=old,
        new=new,
    )


def _fingerprint(plan: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(plan), sort_keys=True, default=str).encode()).hexdigest()[:16]
