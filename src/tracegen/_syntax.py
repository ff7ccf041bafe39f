"""One line for a YAML or JSON syntax error: ``file:line:col: not valid YAML: problem (fix it there)``."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

__all__ = ["syntax_error_line"]


def syntax_error_line(path: str | Path, e: yaml.YAMLError | json.JSONDecodeError) -> str:
    """Where the parser stopped (1-based line and column) and why, in one line, without the parser's dump."""
    if isinstance(e, json.JSONDecodeError):
        return f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}"
    where = str(path)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is not None:
        where += f":{mark.line + 1}:{mark.column + 1}"
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: not valid YAML: {' '.join(str(detail).split())}"
