"""OpenAI Batch API mode: half the price, the same guarantees as online mode.

    result = await run_batches(iter_plan(run_dir), config, run_dir, on_stage=print)
    rows = status(run_dir)      # every batch: status and request counts
    rows = cancel(run_dir)      # cancel every batch still in flight
    outstanding_parts(run_dir)  # parts not collected yet (an online run now could pay twice)

Modules: :mod:`.runner` (the flow: submit, resume, poll) over :mod:`.harvest` (collecting, length
retries) and :mod:`.session` (the session's state, over the generation core :mod:`tracegen.engine.core`),
:mod:`.accounting` (dollars in ledger.jsonl, one session per part), :mod:`.journal` (batches.jsonl:
durability and resume), :mod:`.parts` (splitting within the API's limits), :mod:`.api` (Files/Batches calls
through the SDK), :mod:`.collect` (output and error files), :mod:`.rows` (status rows), :mod:`.entry`
(these entry points).
"""

from .entry import acancel, astatus, cancel, outstanding_parts, run_batches, status
from .parts import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE

__all__ = [
    "MAX_BYTES_PER_FILE",
    "MAX_REQUESTS_PER_FILE",
    "acancel",
    "astatus",
    "cancel",
    "outstanding_parts",
    "run_batches",
    "status",
]
