"""Rendering for the CLI: the live progress display and summary tables (rich).

The library reports :class:`tracegen.engine.Progress` snapshots through a callback; this module turns them
into a live display on a terminal (it fits 80 columns), or one plain log line every few seconds when stderr
is not a terminal (only when something moved, with a heartbeat otherwise).

Summaries are written in words: booleans as yes/no, nested tables as ``name: value`` lists, dollars as
dollars. Every string that comes from data, a server or the user is rendered as a ``rich.text.Text`` made by
:func:`safe` (redacted, control characters escaped): never parsed as Rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .redact import terminal_text

__all__ = [
    "batch_table",
    "budget_stop_line",
    "dict_table",
    "estimate_table",
    "live",
    "models_table",
    "progress_line",
    "progress_panel",
    "safe",
    "summary_table",
]

PLAIN_INTERVAL_S = 5.0
PLAIN_HEARTBEAT_S = 30.0
BAR_WIDTH = 34

#: What a summary key means, in words (keys not listed: underscores become spaces).
LABELS = {
    "total_spent_usd": "spent by the run dir (all sessions)",
    "cost_usd": "spent this session",
    "answers_cost_usd": "answers billed this session",
    "reserved_usd_unknown": "charged for unknown outcomes",
    "budget_usd": "budget",
    "stop_reason": "stopped because",
    "skipped_done": "already done (skipped)",
    "unfinished": "sent, abandoned at the stop (resent on rerun)",
    "failed_before_sending": "failed before sending",
    "length": "answers cut at max_tokens",
    "n_429": "429 answers",
    "n_5xx": "5xx answers",
    "n_retries": "retries",
    "n_timeouts": "timeouts",
    "n_connection_errors": "connection errors",
    "traces_total": "answers in traces.jsonl",
    "elapsed_s": "elapsed, seconds",
    "budget_requests_exact": "budget counts exact",
    "to_finish": "to finish the plan",
    "requests_left": "requests left",
    "requests_planned": "of planned",
    "more_usd": "about this much more",
    "finish_budget_usd": "a budget that finishes it",
    "stage_budgets_usd": "stage budgets it needs",
}

_STOP_WORDS = {
    "completed": "completed: every planned request is done",
    "budget": "the budget ran out",
    "max_requests": "--max-requests reached",
    "max_total_tokens": "--max-total-tokens reached",
    "max_tokens": "--max-total-tokens reached",  # stats.json written before "max_total_tokens"
    "interrupted": "interrupted (rerun to continue)",
    "auth": "the API key was refused",
    "quota": "the account has no credit left",
    "endpoint": "the endpoint failed",
    "run_dir": "the run directory became unwritable",
}


def safe(text: Any, style: str = "") -> Text:
    """``text`` as plain Rich text: redacted, control characters escaped, markup *not* interpreted."""
    return Text(terminal_text(str(text)), style=style)


# ---- words ---------------------------------------------------------------------------------------------------
def _money(x: Any) -> str:
    if x is None:
        return "-"
    v = float(x)
    return f"${v:,.4f}" if abs(v) < 10 else f"${v:,.2f}"


def _dur(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _short(n: float) -> str:
    """1234 -> 1.2k, 3_400_000 -> 3.4M (token rates in the live view)."""
    n = float(n)
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:,.1f}{unit}"
    return f"{n:,.0f}"


def _label(key: str) -> str:
    return LABELS.get(key, key.replace("_", " "))


def words(key: str, v: Any) -> str:
    """A summary value in words: yes/no, dollars, thousands separators, ``name: value`` lists."""
    if key == "budget_requests_exact" and isinstance(v, bool):
        return (
            "yes: the budget was walked request by request over the plan"
            if v
            else "no: estimated from the mean prompt length"
        )
    if key == "stop_reason" and isinstance(v, str):
        return _STOP_WORDS.get(v, v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _money(v) if "usd" in key else f"{v:,.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, Mapping):
        if not v:
            return "none"
        return ", ".join(f"{_label(str(k))}: {words(str(k), vv)}" for k, vv in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(words(key, x) for x in v) if v else "none"
    return str(v)


def _table(title: str, rows: Mapping[str, Any]) -> Table:
    t = Table(title=safe(title), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows.items():
        t.add_row(safe(_label(k)), safe(words(k, v)))
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
            inner = {kk: vv for kk, vv in v.items() if not isinstance(vv, list) and kk != "config"}
            parts.append(_table(k.replace("_", " "), inner))
    flat = {k: v for k, v in summary.items() if not isinstance(v, (Mapping, list))}
    if flat:
        parts.insert(0, _table("result" if "run" in summary else "run", flat))
    return Group(*parts)


def budget_stop_line(stats: Mapping[str, Any], rerun: Callable[[float], str]) -> str | None:
    """At a budget stop: what was not sent and the budget that would finish it (``rerun(budget)``: command)."""
    if stats.get("stop_reason") != "budget" or not isinstance(stats.get("to_finish"), Mapping):
        return None
    left = stats["to_finish"]
    line = (
        f"stopped by the budget: {left['requests_left']:,} of {left['requests_planned']:,} requests not sent"
    )
    if "finish_budget_usd" in left:
        more, budget = _money(left["more_usd"]), float(left["finish_budget_usd"])
        line += f"; about {more} more would finish them: `{rerun(budget)}`"
    capped = left.get("stage_budgets_usd")
    if isinstance(capped, Mapping) and capped:
        stages = ", ".join(f"stage {name} to {_money(usd)}" for name, usd in capped.items())
        line += f" (first raise budget_usd in the config: {stages})"
    return line


# ---- live progress -------------------------------------------------------------------------------------------
def _get(p: Any, name: str, default: Any = None) -> Any:
    return p.get(name, default) if isinstance(p, Mapping) else getattr(p, name, default)


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:3.0f}%" if whole > 0 else "  -%"


def _rate(p: Any) -> float:
    """Requests/s over the last seconds, or the average since the start when the window saw none."""
    rps = float(_get(p, "requests_per_s", 0.0) or 0.0)
    if rps > 0:
        return rps
    elapsed = float(_get(p, "elapsed_s", 0.0) or 0.0)
    finished = (
        int(_get(p, "succeeded", 0) or 0) + int(_get(p, "failed", 0) or 0) + int(_get(p, "rejected", 0) or 0)
    )
    return finished / elapsed if elapsed > 0 else 0.0


def _eta(p: Any) -> str:
    eta = _dur(_get(p, "eta_s"))
    return f"{eta} (budget stop)" if _get(p, "affordable") is not None and eta != "-" else eta


def progress_line(p: Any) -> str:
    """One plain line for logs: the figures that matter, all real (no rates before the first answer)."""
    total = int(_get(p, "total", 0) or 0)
    done = int(_get(p, "done", 0) or 0)
    budget = _get(p, "budget_usd")
    spent = _money(_get(p, "cost_usd")) + (f" of {_money(budget)}" if budget else "")
    of = f"/{total:,} ({_pct(done, total).strip()})" if total else ""
    parts = [
        f"[{_dur(_get(p, 'elapsed_s'))}] done {done:,}{of}",
        f"failed {_get(p, 'failed', 0):,}",
        f"spent {spent}",
    ]
    projected = _get(p, "projected_total_usd")
    if projected is not None:
        parts.append(f"projected {_money(projected)}")
    rate = _rate(p)
    if rate > 0:
        tpm = float(_get(p, "tokens_per_min", 0.0) or 0.0)
        parts.append(f"{rate:,.1f} req/s" + (f", {_short(tpm)} tok/min" if tpm > 0 else ""))
    else:
        parts.append(f"waiting for the first answers ({_get(p, 'in_flight', 0)} in flight)")
    if _get(p, "n_429", 0) or _get(p, "n_retries", 0):
        parts.append(f"429s {_get(p, 'n_429', 0)}, retries {_get(p, 'n_retries', 0)}")
    parts.append(f"ETA {_eta(p)}")
    return " | ".join(parts)


def progress_panel(p: Any) -> Group:
    """The live view: two bars with percentages and five short lines, at most 80 columns wide."""
    from rich.progress_bar import ProgressBar  # a terminal's view only: a piped run never imports it

    total = int(_get(p, "total", 0) or 0)
    done = int(_get(p, "done", 0) or 0)
    budget = _get(p, "budget_usd")
    spent_usd = float(_get(p, "cost_usd", 0) or 0)
    bars = Table.grid(padding=(0, 1))
    bars.add_column(style="bold", width=9)
    bars.add_column(width=BAR_WIDTH)
    bars.add_column()
    bars.add_row(
        "requests",
        ProgressBar(total=total or None, completed=done, width=BAR_WIDTH),
        Text(f"{_pct(done, total)}  {done:,} / {total:,}" if total else f"{done:,} done"),
    )
    if budget:
        bars.add_row(
            "budget",
            ProgressBar(total=float(budget), completed=min(spent_usd, float(budget)), width=BAR_WIDTH),
            Text(f"{_pct(spent_usd, float(budget))}  {_money(spent_usd)} of {_money(budget)}"),
        )
    t = Table.grid(padding=(0, 1))
    t.add_column(style="bold", width=9)
    t.add_column()
    t.add_row(
        "answers",
        Text(
            f"ok {_get(p, 'succeeded', 0):,}   failed {_get(p, 'failed', 0):,}   "
            f"rejected {_get(p, 'rejected', 0):,}   in flight {_get(p, 'in_flight', 0):,}"
        ),
    )
    affordable = _get(p, "affordable")
    projected = f"projected {_money(_get(p, 'projected_total_usd'))}"
    if affordable is not None:
        projected += f" (budget ends it: {affordable:,} more)"
    t.add_row("dollars", Text(f"committed {_money(_get(p, 'committed_usd'))}   {projected}"))
    rpm = _get(p, "limit_rpm")
    rate = f"{_rate(p):,.1f} req/s" + (f" of {rpm / 60:,.1f}" if rpm else "")
    t.add_row("rate", Text(f"{rate}   429s {_get(p, 'n_429', 0):,}   retries {_get(p, 'n_retries', 0):,}"))
    tpm = _get(p, "limit_tpm")
    used = _short(_get(p, "tokens_per_min", 0.0) or 0)
    reserved = _short(_get(p, "reserved_tokens_per_min", 0.0) or 0)
    tokens = f"{used}/min billed, {reserved}/min reserved"
    if tpm:
        tokens += f" of {_short(tpm)} TPM"
    t.add_row("tokens", Text(tokens))
    if tpm:
        t.add_row("", Text("(each request holds prompt + max_tokens until answered)", style="dim"))
    t.add_row("ETA", Text(_eta(p)))
    return Group(bars, t)


@contextmanager
def live(console: Console, *, plain: bool) -> Iterator[Callable[[Any], None]]:
    """Yield an ``on_progress`` callback that renders snapshots live (tty) or as periodic lines."""
    if plain:
        last_at = [0.0]
        last_seen: list[Any] = [None]

        def log(p: Any) -> None:
            now = time.monotonic()
            state = (_get(p, "done", 0), _get(p, "failed", 0), _get(p, "cost_usd", 0))
            moved = state != last_seen[0]
            final = bool(_get(p, "final", False))
            due = now - last_at[0] >= (PLAIN_INTERVAL_S if moved else PLAIN_HEARTBEAT_S)
            if due or final:
                last_at[0] = now
                last_seen[0] = state
                console.print(safe(progress_line(p)), highlight=False, soft_wrap=True)

        yield log
        return
    from rich.live import Live  # a terminal's view only

    with Live(Text("starting…"), console=console, refresh_per_second=4, transient=False) as lv:

        def show(p: Any) -> None:
            lv.update(progress_panel(p))

        yield show


def batch_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    t = Table(title="batches")
    cols = ("batch_id", "status", "total", "completed", "failed", "input_file_id")
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*(safe(r.get(c, "")) for c in cols))
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
