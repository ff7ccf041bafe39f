"""Command line of the fake OpenAI server: ``python -m tracegen.testing.fake_openai --port 0 ...``.

Every ``FakeOptions`` field is a flag (``--requests-per-minute 500``, ``--no-batch-expire``, ...); the API key
is read from ``$TRACEGEN_FAKE_API_KEY`` (or ``--api-key``, which other users of the machine can see). Once
listening, the server prints one line, ``tracegen fake server listening on http://HOST:PORT/v1``, and serves
until interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from ..errors import TracegenError
from .options import API_KEY_ENV, FakeOptions
from .server import READY_PREFIX, serve

__all__ = ["build_parser", "main", "options_from_args", "serve"]


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none") else int(text)


def _models(text: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    return names or None


def build_parser(prog: str = "python -m tracegen.testing.fake_openai") -> argparse.ArgumentParser:
    """An argparse parser with ``--host``, ``--port`` and one flag per ``FakeOptions`` field."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OpenAI-compatible fake server for offline tests, benchmarks and rehearsals. "
        "Its answers are synthetic and their model is named 'tracegen-fake:<model>'.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one")
    hints = typing.get_type_hints(FakeOptions)
    for f in dataclasses.fields(FakeOptions):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        kind = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in (float, int):
            kwargs["type"] = kind
        elif kind == (int | None):
            kwargs["type"] = _optional_int
        elif kind == (tuple[str, ...] | None):
            kwargs["type"] = _models
        elif typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        parser.add_argument(flag, **kwargs)
    return parser


def options_from_args(args: argparse.Namespace) -> FakeOptions:
    """``FakeOptions`` from parsed flags; the API key falls back to ``$TRACEGEN_FAKE_API_KEY``."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(FakeOptions)}
    if values["api_key"] is None:
        values["api_key"] = os.environ.get(API_KEY_ENV) or None
    return FakeOptions(**values)


def main(argv: Sequence[str] | None = None, prog: str = "python -m tracegen.testing.fake_openai") -> int:
    """Parse flags and serve until interrupted; returns the exit code. ``prog`` names the command in --help."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        opts = options_from_args(args)
    except TracegenError as e:
        parser.error(str(e))

    def ready(base_url: str) -> None:
        print(READY_PREFIX + base_url, flush=True)

    try:
        serve(opts, args.host, args.port, on_ready=ready)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
