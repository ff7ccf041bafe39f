"""The run report: ``tracegen report RUN_DIR`` writes ``RUN_DIR/report.html``, one self-contained page.

:func:`collect` (``collect.py``) streams the run directory into a small JSON-able summary; :func:`render`
(``render.py``) wraps it, the styles and the script into one HTML file that needs no network.
"""

from __future__ import annotations

from .collect import collect
from .render import REPORT_FILE, render, write_report

__all__ = ["REPORT_FILE", "collect", "render", "write_report"]
