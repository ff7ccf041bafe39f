"""The public API is exactly what __init__ exports (httpx style)."""

from __future__ import annotations

import tracegen


def test_all_is_pinned() -> None:
    assert sorted(tracegen.__all__) == sorted(
        [
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
    )


def test_every_export_resolves_and_is_documented() -> None:
    for name in tracegen.__all__:
        obj = getattr(tracegen, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_error_tree() -> None:
    for name in (
        "ConfigError",
        "SourceError",
        "PlanError",
        "RunDirError",
        "TeacherError",
        "BatchError",
        "HubError",
    ):
        assert issubclass(getattr(tracegen, name), tracegen.TracegenError)
    assert issubclass(tracegen.BadRecordError, tracegen.SourceError)
    for name in ("AuthError", "QuotaError", "EndpointError"):
        assert issubclass(getattr(tracegen, name), tracegen.TeacherError)


def test_exported_functions_are_not_shadowed_by_their_submodules() -> None:
    import importlib

    # the modules live in stage packages, none named like an exported function (clean, estimate, ...)
    for name, module in (
        ("estimate", "planning.estimate"),
        ("export", "publish.export"),
        ("merge", "cleaning.merge"),
        ("clean", "cleaning.postprocess"),
    ):
        importlib.import_module(f"tracegen.{module}")
        assert callable(getattr(tracegen, name)), name
        assert not isinstance(getattr(tracegen, name), type(tracegen)), name
