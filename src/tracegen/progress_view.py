"""Rendering for the CLI: the live progress display and summary tables (rich).

The library reports :class:`tracegen.engine.Progress` snapshots through a callback; this module turns them
into a live display on a terminal, or one plain log line every few seconds when stderr is not a terminal.

Every string that comes from data, a server or the user is rendered as a ``rich.text.Text`` made by
:func:`safe` (redacted, control characters escaped): never parsed as Rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .redact import terminal_text

__all__ = ["batch_table", "dict_table", "estimate_table", "live", "safe", "summary_table"]

PLAIN_INTERVAL_S = 5.0


def safe(text: Any, style: str = "") -> Text:
    """``text`` as plain Rich text: redacted, control characters escaped, markup *not* interpreted."""
    return Text(terminal_text(str(text)), style=style)


def _money(x: Any) -> str:
    return "-" if x is None else f"${float(x):,.4f}" if float(x) < 10 else f"${float(x):,.2f}"


def _dur(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _get(p: Any, name: str, default: Any = None) -> Any:
    return p.get(name, default) if isinstance(p, Mapping) else getattr(p, name, default)


def progress_line(p: Any) -> str:
    """One plain line for logs."""
    budget = _get(p, "budget_usd")
    spent = f"{_money(_get(p, 'cost_usd'))}" + (f"/{_money(budget)}" if budget else "")
    return (
        f"done {_get(p, 'done', 0):,}/{_get(p, 'total', 0):,} | spent {spent} "
        f"(projected {_money(_get(p, 'projected_total_usd'))}) | {_get(p, 'requests_per_s', 0.0):.1f} req/s "
        f"| {_get(p, 'tokens_per_min', 0.0):,.0f} tok/min | in flight {_get(p, 'in_flight', 0)} "
        f"| 429s {_get(p, 'n_429', 0)} retries {_get(p, 'n_retries', 0)} failed {_get(p, 'failed', 0)} "
        f"| ETA {_dur(_get(p, 'eta_s'))}"
    )


def progress_panel(p: Any) -> Group:
    total = max(int(_get(p, "total", 0) or 0), 1)
    done = int(_get(p, "done", 0) or 0)
    budget = _get(p, "budget_usd")
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row(
        "requests", f"{done:,} / {total:,}   ok {_get(p, 'succeeded', 0):,}  failed {_get(p, 'failed', 0):,}"
    )
    spent = _money(_get(p, "cost_usd"))
    t.add_row(
        "dollars",
        f"{spent} spent"
        + (f" of {_money(budget)}" if budget else "")
        + f"   committed {_money(_get(p, 'committed_usd'))}   projected {_money(_get(p, 'projected_total_usd'))}",
    )
    rpm, tpm = _get(p, "limit_rpm"), _get(p, "limit_tpm")
    t.add_row(
        "rate",
        f"{_get(p, 'requests_per_s', 0.0):.1f} req/s"
        + (f" (limit {rpm / 60:.1f}/s)" if rpm else "")
        + f"   {_get(p, 'tokens_per_min', 0.0):,.0f} tok/min"
        + (f" (limit {tpm:,.0f})" if tpm else "")
        + f"   in flight {_get(p, 'in_flight', 0)}",
    )
    t.add_row("trouble", f"429s {_get(p, 'n_429', 0)}   retries {_get(p, 'n_retries', 0)}")
    t.add_row("ETA", _dur(_get(p, "eta_s")))
    bars = Table.grid(padding=(0, 2))
    bars.add_column(style="bold")
    bars.add_column()
    bars.add_row("progress", ProgressBar(total=total, completed=done, width=50))
    if budget:
        spent_usd = float(_get(p, "cost_usd", 0) or 0)
        bars.add_row(
            "budget", ProgressBar(total=float(budget), completed=min(spent_usd, float(budget)), width=50)
        )
    return Group(bars, t)


@contextmanager
def live(console: Console, *, plain: bool) -> Iterator[Callable[[Any], None]]:
    """Yield an ``on_progress`` callback that renders snapshots live (tty) or as periodic lines."""
    if plain:
        last = [0.0]

        def log(p: Any) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_INTERVAL_S or _get(p, "final", False):
                last[0] = now
                console.print(safe(progress_line(p)), highlight=False, soft_wrap=True)

        yield log
        return
    with Live(Text("starting…"), console=console, refresh_per_second=4, transient=False) as lv:

        def show(p: Any) -> None:
            lv.update(progress_panel(p))

        yield show


def _table(title: str, rows: Mapping[str, Any]) -> Table:
    t = Table(title=safe(title), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows.items():
        if isinstance(v, Mapping):
            v = ", ".join(f"{kk}: {vv:,}" if isinstance(vv, int) else f"{kk}: {vv}" for kk, vv in v.items())
        elif isinstance(v, float):
            v = _money(v) if "usd" in k else f"{v:,.4g}"
        elif isinstance(v, int):
            v = f"{v:,}"
        t.add_row(safe(k), safe(v))
    return t


def dict_table(title: str, data: Mapping[str, Any]) -> Table:
    return _table(title, {k: v for k, v in data.items() if not isinstance(v, list)})


def estimate_table(est: Mapping[str, Any]) -> Group:
    parts: list[Any] = []
    flat = {k: v for k, v in est.items() if not isinstance(v, (Mapping, list))}
    parts.append(_table("dry run: nothing was sent", flat))
    for k, v in est.items():
        if isinstance(v, Mapping) and v:
            parts.append(_table(k.replace("_", " "), v))
    return Group(*parts)


def summary_table(summary: Mapping[str, Any]) -> Group:
    parts: list[Any] = []
    for k, v in summary.items():
        if isinstance(v, Mapping) and v and k != "config":
            inner = {kk: vv for kk, vv in v.items() if not isinstance(vv, (list,)) and kk != "config"}
            parts.append(_table(k.replace("_", " "), inner))
    flat = {k: v for k, v in summary.items() if not isinstance(v, (Mapping, list))}
    if flat:
        parts.insert(0, _table("run", flat))
    return Group(*parts)


def batch_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    t = Table(title="batches")
    for col in ("batch_id", "status", "total", "completed", "failed", "input_file_id"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            *(
                safe(r.get(c, ""))
                for c in ("batch_id", "status", "total", "completed", "failed", "input_file_id")
            )
        )
    return t


def models_table(rows: Sequence[Mapping[str, Any]], note: str) -> Table:
    """`tracegen models`: one row per exact model id; prices in USD per 1M tokens."""
    t = Table(title="models (USD per 1M tokens)", caption=note, pad_edge=False, box=None)
    columns = [
        ("id", "id"),
        ("enc", "encoding"),
        ("context", "context_window"),
        ("in", "input"),
        ("cached", "cached_input"),
        ("out", "output"),
        ("batch in", "batch_input"),
        ("batch out", "batch_output"),
        ("reasoning", "reasoning"),
    ]
    if any(r.get("origin") != "table" for r in rows):
        columns.append(("from", "origin"))
    for title, _ in columns:
        t.add_column(title, no_wrap=True, justify="left" if title in ("id", "enc", "from") else "right")
    for r in rows:
        t.add_row(*(_model_cell(r.get(key)) for _, key in columns))
    return t


def _model_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).removesuffix("_base")
