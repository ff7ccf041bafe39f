"""tracegen: Orca-style explanation-trace datasets from FLAN v2, inside a hard dollar budget.

    import tracegen
    summary = tracegen.run(source=["flan/*.jsonl"], model="gpt-4o", budget_usd=500)
    estimate = tracegen.dry_run(source=["flan/*.jsonl"], model="gpt-4o", budget_usd=500)

The pieces compose on their own: ``build_plan`` → ``generate`` → ``clean`` → ``export`` → ``push``.
"""

import sys
import types
from typing import TYPE_CHECKING, Any

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
    from .answer_check import check_answer
    from .api import dry_run, run
    from .clean_config import DedupConfig, FilterConfig
    from .engine import Progress, RunResult, generate
    from .estimate import Estimate, estimate
    from .export import export, run_summary
    from .hub import push
    from .pipeline import merge
    from .plan import Plan, PlanStats, build_plan, iter_plan, write_plan
    from .postprocess import clean
    from .sources import Source

_LAZY: dict[str, str] = {
    "check_answer": ".answer_check",
    "dry_run": ".api",
    "run": ".api",
    "DedupConfig": ".clean_config",
    "Progress": ".engine",
    "RunResult": ".engine",
    "generate": ".engine",
    "Estimate": ".estimate",
    "estimate": ".estimate",
    "export": ".export",
    "run_summary": ".export",
    "FilterConfig": ".clean_config",
    "push": ".hub",
    "merge": ".pipeline",
    "Plan": ".plan",
    "PlanStats": ".plan",
    "build_plan": ".plan",
    "iter_plan": ".plan",
    "write_plan": ".plan",
    "clean": ".postprocess",
    "Source": ".sources",
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


class _Package(types.ModuleType):
    """``tracegen.estimate``/``export``/``merge`` stay the functions after their submodules are imported.

    Importing ``tracegen.estimate`` (the module) sets that attribute on the package, which would hide the
    function ``tracegen.estimate`` exported here; the submodule is still ``sys.modules["tracegen.estimate"]``.
    ``tracegen.merge`` is :func:`tracegen.pipeline.merge` (what ``tracegen merge`` calls), not the submodule's.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            if _LAZY[name] != "." + name:
                return  # the exported function loads from its own module on first use (__getattr__)
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
