"""Render the report data into one self-contained HTML file (no network: styles, script and data inline).

Safety: the run's data (questions, answers, system messages: any text at all) enters the page only as JSON
inside ``<script type="application/json">``, with every ``<``, ``>`` and ``&`` written as a ``\\u00XX`` escape
so no byte sequence in the data can close the script element or open a comment; the script reads it with
``JSON.parse`` and puts text into the page with ``textContent`` / SVG text nodes, never as markup. A
Content-Security-Policy meta tag forbids every network fetch (``default-src 'none'``), so the page works from
``file://`` and cannot call home even if opened on a machine with a network.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from ..rundir import REPORT, RunPaths, atomic_write_bytes
from .collect import collect

__all__ = ["REPORT_FILE", "embed_json", "render", "write_report"]

log = logging.getLogger(__name__)

REPORT_FILE = REPORT
_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON safe to place inside a ``<script>`` element: no ``<``, ``>`` or ``&`` characters at all."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render(data: dict[str, Any]) -> str:
    """The report page for ``data`` (from :func:`tracegen.report.collect`)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>tracegen report</title>\n"
        f"<style>\n{_asset('report.css')}\n</style>\n"
        "</head>\n<body>\n"
        '<noscript><p class="noscript">This report draws its charts and tables with JavaScript; '
        "enable it for this file (nothing is fetched from the network).</p></noscript>\n"
        '<div id="app"></div>\n'
        f'<script type="application/json" id="report-data">{embed_json(data)}</script>\n'
        f"<script>\n{_asset('report.js')}\n</script>\n"
        "</body>\n</html>\n"
    )


def write_report(run_dir: str | Path, *, seed: int = 0) -> Path:
    """Write ``RUN_DIR/report.html`` (atomically) and return its path."""
    run = Path(run_dir)
    page = render(collect(run, seed=seed))
    path = RunPaths(run).report
    atomic_write_bytes(path, page.encode("utf-8"))
    log.debug("wrote %s (%d bytes)", path, len(page))
    return path
