"""The generation engine: teacher clients, retry policy, rate limiter, dollar budget, run-dir store, runner.

    result = await generate(records, config, run_dir, on_progress=show)

See :mod:`.runner` for the flow, :mod:`.budget` for the durable budget, :mod:`.limiter` for rate limiting,
:mod:`.store` for durability and resume, :mod:`.client` for the teacher seam and its neutral errors.
:mod:`.core` is the generation core the online engine (:mod:`.runner` + :mod:`.send`) and the Batch API
runner (:mod:`tracegen.batch`) share: the request item, pricing, counters (:mod:`.counters`), the record
writer, the stop reasons and the finish. Below ``generate`` (and ``tracegen.batch.run_batches``) no
``RunConfig`` flows: :mod:`.settings` is what does (the teacher, the limits, the public config).
"""

from typing import TYPE_CHECKING, Any

from ._json import request_key
from .budget import Budget, Ledger, Reservation
from .client import (
    ChatClient,
    ChatResult,
    Endpoint,
    TeacherCallError,
    TeacherConnectionError,
    TeacherHTTPError,
    TeacherTimeout,
    make_client,
    resolve_endpoint,
)
from .events import STOP_REASONS, Progress, RunResult
from .limiter import Limiter, LimiterState, Permit
from .retry import call_with_retries, fatal_error, is_retryable, retry_policy
from .runner import generate
from .store import DoneSet, ResultWriter, RunDir

if TYPE_CHECKING:  # each transport loads when asked for: the openai SDK (~0.4 s), aiohttp (~0.15 s)
    from .client_aiohttp import AiohttpChatClient
    from .client_http import HttpChatClient
    from .client_sdk import SdkChatClient


#: Exported transports, each imported on first use: name -> module.
_LAZY = {
    "SdkChatClient": ".client_sdk",
    "AiohttpChatClient": ".client_aiohttp",
    "HttpChatClient": ".client_http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


__all__ = [
    "STOP_REASONS",
    "AiohttpChatClient",
    "Budget",
    "ChatClient",
    "ChatResult",
    "DoneSet",
    "Endpoint",
    "HttpChatClient",
    "Ledger",
    "Limiter",
    "LimiterState",
    "Permit",
    "Progress",
    "Reservation",
    "ResultWriter",
    "RunDir",
    "RunResult",
    "SdkChatClient",
    "TeacherCallError",
    "TeacherConnectionError",
    "TeacherHTTPError",
    "TeacherTimeout",
    "call_with_retries",
    "fatal_error",
    "generate",
    "is_retryable",
    "make_client",
    "request_key",
    "resolve_endpoint",
    "retry_policy",
]
