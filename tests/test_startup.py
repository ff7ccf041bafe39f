"""Start-up (tracegen/_startup.py): imports run with the cyclic collector paused, then it is as it was."""

from __future__ import annotations

import gc

from tracegen._startup import no_collection


def test_imports_pause_the_collector_and_restore_it_as_it_was() -> None:
    assert gc.isenabled()
    with no_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with no_collection():
            pass
        assert not gc.isenabled()  # a program that disabled it keeps it disabled
    finally:
        gc.enable()
