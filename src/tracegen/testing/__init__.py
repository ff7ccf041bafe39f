"""Offline stand-ins for the services tracegen talks to: an OpenAI-compatible fake server.

Used by tests, benchmarks and offline rehearsals; its answers are synthetic ("[tracegen-fake] ...", model
``tracegen-fake:<model>``) so they are never mistaken for real data.

    from tracegen.testing import FakeOptions, FakeServer

    with FakeServer(FakeOptions(requests_per_minute=600)) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        srv.ledger()    # every billed answer
        srv.counters()  # status codes, 429s, faults, in-flight max, totals
"""

from __future__ import annotations

from .app import build_app
from .ledger import request_key
from .options import FakeOptions
from .server import FakeServer, serve

__all__ = ["FakeOptions", "FakeServer", "build_app", "request_key", "serve"]
