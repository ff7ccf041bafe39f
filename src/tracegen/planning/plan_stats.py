"""Plan statistics (``plan_stats.json``) and the one-line shortfall message."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..records import SUBMIXES

__all__ = ["DROP_REASONS", "PlanStats", "label_order", "shortfall_message"]

DROP_REASONS = ("bad_record", "dialog", "fewshot", "bigbench", "too_long", "duplicate", "contaminated")


@dataclass
class PlanStats:
    """What the plan holds and what was left out, JSON-able (``plan_stats.json``)."""

    n_requested: int
    seed: int
    mix: dict[str, float]
    """Normalised shares used (cot, niv, flan, t0)."""
    encoding: str
    dedup: str
    """``pair`` (system message + question) or ``question``."""
    rows_read: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    """Tasks with eligible rows, per submix."""
    eligible: dict[str, int] = field(default_factory=dict)
    """Rows per submix left after every drop (what quotas draw from)."""
    quota: dict[str, int] = field(default_factory=dict)
    planned: dict[str, int] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    """quota - planned, per submix (redistributed only with fill_shortfall)."""
    absent: list[str] = field(default_factory=list)
    """Submixes with a share but no eligible row in the source: left out, the other shares renormalised."""
    planned_total: int = 0
    planned_per_system_message: dict[str, int] = field(default_factory=dict)
    """Orca id ("7") or ``template:<name>`` -> planned rows."""
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    niv_tasks_capped: int = 0
    """NIv2 tasks that had more eligible rows than niv_max_per_task."""
    prompt_tokens: int = 0
    prompt_tokens_per_submix: dict[str, int] = field(default_factory=dict)
    shard: str | None = None
    """``K/N`` when this is one shard of the plan (see :func:`write_plan`)."""
    decontaminated: dict[str, int] = field(default_factory=dict)
    """Evaluation set -> source rows dropped for overlapping it (``--decontaminate``)."""
    fill_shortfall: bool = False
    """Whether a short submix's missing rows went to the others (``redistributed``)."""
    redistributed: dict[str, int] = field(default_factory=dict)
    """Quota moved by fill_shortfall: + rows a submix received, - rows it could not fill."""
    source_passes: int = 1
    """Full reads of the source: 1, or 2 when some task's sampled candidates fell short after dedup."""
    task_sizes_read: str = ""
    """How the per-task sizes were read first: ``columns`` (Parquet metadata columns only) and/or ``rows``."""
    candidates: int = 0
    """Rows kept aside during the pass (about 1.1x the plan plus a few per task)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanStats:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def label_order(label: str) -> tuple[int, int, str]:
    """Sort key of system-message labels: numbered ones in number order, then the named ones."""
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


def shortfall_message(stats: PlanStats) -> str | None:
    """One line saying what the plan could not fill and why, or None when it holds ``n_requested`` rows."""
    short = {s: v for s, v in stats.shortfall.items() if v > 0}
    if not short and stats.planned_total >= stats.n_requested:
        return None
    parts = [
        f"{s} had {stats.eligible.get(s, 0):,} eligible rows for a quota of {stats.quota.get(s, 0):,}"
        for s in SUBMIXES
        if s in short
    ]
    line = f"planned {stats.planned_total:,} of --n {stats.n_requested:,} requests: " + "; ".join(parts)
    if stats.absent:
        line += f"; {', '.join(stats.absent)} absent from the source"
    if stats.fill_shortfall:
        return line + " (every submix is exhausted: the source holds no more eligible rows)"
    return line + "; --fill-shortfall gives the missing rows to the other submixes in proportion to the mix"
