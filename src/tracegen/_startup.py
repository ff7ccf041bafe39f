"""Start-up: imports with the cyclic garbage collector paused.

Importing allocates long-lived objects only (modules, classes, functions, compiled patterns): a collection
during imports frees nothing, yet each one walks what was allocated so far, and the full collection that
the allocations trigger walks everything. ``tracegen`` and ``tracegen.pipeline`` (which every CLI command
imports) run their imports inside :func:`no_collection` (measured: ~35 ms of a run's 0.35 s of imports); the
collector is resumed as it was (a program that disabled it keeps it disabled).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["no_collection"]


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block, then restore it as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
