"""tracegen: Orca-style explanation-trace datasets from FLAN v2, inside a hard dollar budget.

    import tracegen
    summary = tracegen.run(source=["flan/*.jsonl"], model="gpt-4o", budget_usd=500)
    estimate = tracegen.dry_run(source=["flan/*.jsonl"], model="gpt-4o", budget_usd=500)

The pieces compose on their own: ``build_plan`` → ``generate`` → ``clean`` → ``export`` → ``push``.
"""

from typing import TYPE_CHECKING, Any

from ._startup import no_collection

with no_collection():
    from ._version import __version__
    from .config import RunConfig, load_config
    from .errors import (
        AuthError,
        BadRecordError,
        BatchError,
        ConfigError,
        EndpointError,
        HubError,
        PlanError,
        QuotaError,
        RunDirError,
        SourceError,
        TeacherError,
        TracegenError,
    )
    from .records import Record

if TYPE_CHECKING:  # the heavy modules (datasets, openai) load on first use, keeping `import tracegen` fast
    from .api import dry_run, run
    from .clean_config import DedupConfig, FilterConfig
    from .cleaning.answer_check import check_answer
    from .cleaning.postprocess import clean
    from .engine import Progress, RunResult, generate
    from .pipeline import merge
    from .planning.estimate import Estimate, estimate
    from .planning.plan import Plan, PlanStats, build_plan, iter_plan, write_plan
    from .planning.sources import Source
    from .publish.export import export, run_summary
    from .publish.hub import push

_LAZY: dict[str, str] = {
    "check_answer": ".cleaning.answer_check",
    "dry_run": ".api",
    "run": ".api",
    "DedupConfig": ".clean_config",
    "Progress": ".engine",
    "RunResult": ".engine",
    "generate": ".engine",
    "Estimate": ".planning.estimate",
    "estimate": ".planning.estimate",
    "export": ".publish.export",
    "run_summary": ".publish.export",
    "FilterConfig": ".clean_config",
    "push": ".publish.hub",
    "merge": ".pipeline",
    "Plan": ".planning.plan",
    "PlanStats": ".planning.plan",
    "build_plan": ".planning.plan",
    "iter_plan": ".planning.plan",
    "write_plan": ".planning.plan",
    "clean": ".cleaning.postprocess",
    "Source": ".planning.sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracegen' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AuthError",
    "BadRecordError",
    "BatchError",
    "ConfigError",
    "DedupConfig",
    "EndpointError",
    "Estimate",
    "FilterConfig",
    "HubError",
    "Plan",
    "PlanError",
    "PlanStats",
    "Progress",
    "QuotaError",
    "Record",
    "RunConfig",
    "RunDirError",
    "RunResult",
    "Source",
    "SourceError",
    "TeacherError",
    "TracegenError",
    "__version__",
    "build_plan",
    "check_answer",
    "clean",
    "dry_run",
    "estimate",
    "export",
    "generate",
    "iter_plan",
    "load_config",
    "merge",
    "push",
    "run",
    "run_summary",
    "write_plan",
]
