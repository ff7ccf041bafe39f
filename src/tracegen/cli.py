"""The tracegen command line: a thin Typer layer over the library.

Every command maps flags onto :class:`tracegen.config.RunConfig` (flag > config file > environment > default),
calls one library function, and renders what it returns. A :class:`tracegen.errors.TracegenError`, a usage
error (unknown flag, bad value) or an unwritable path becomes one red line — never a traceback (see
:mod:`tracegen.cli_support`) — and an exit code from :mod:`tracegen.outcome` (1: the user's error, 4: the
teacher's); ``run`` exits 3 / 4 / 130 from the run's outcome too (see the README's exit-code table).
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from . import progress_view
from ._version import __version__
from .cli_support import (
    DEFAULTS,
    FLAGS,
    TracegenGroup,
    config_flags,
    exit_code_of,
    guard,
    quick_exit,
    run_exit_line,
    stage_printer,
)
from .redact import redact

app = typer.Typer(
    cls=TracegenGroup,
    rich_markup_mode=None,  # plain Click help: flags without a <bool> type column, defaults in brackets
    name="tracegen",
    help="Manufacture Orca-style explanation-trace datasets from FLAN v2 with a teacher model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
batch_app = typer.Typer(
    rich_markup_mode=None,
    help="Inspect and cancel OpenAI Batch API jobs of a run directory.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")

console = Console(stderr=True)
out = Console()

T = TypeVar("T")


def _h(text: str, field: str) -> str:
    """Help text with the default a left-out flag means."""
    return f"{text}  [default: {DEFAULTS[field]}]"


def _version(value: bool) -> None:
    if value:
        out.print(f"tracegen {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Manufacture Orca-style explanation-trace datasets from FLAN v2 with a teacher model."""


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a TracegenError or an OSError (a path tracegen writes) becomes one line; exit 1 (4: the teacher's)."""
    return guard(fn, console, lambda: {opt for p in _run_params() for opt in p.opts})


def _run_params() -> list[Any]:
    return typer.main.get_command(app).commands["run"].params  # type: ignore[attr-defined,no-any-return]


def _config(config_file: Path | None, **flags: Any) -> Any:
    from .config import load_config

    return load_config(config_file, flags, flag_names=FLAGS)


# ---- run -----------------------------------------------------------------------------------------------------
@app.command()
def run(
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            "-s",
            metavar="SOURCE",
            show_default=DEFAULTS["source"],
            help="FLAN v2 file, glob, directory, saved dataset or Hub id (repeatable).",
        ),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config file (YAML/JSON).")
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help=_h("Run directory.", "output_dir")),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help=_h("Requests to plan.", "n"))] = None,
    seed: Annotated[
        int | None, typer.Option(help=_h("Seed for sampling and system messages.", "seed"))
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(help=_h("orca | uniform (share tables: config file).", "mix")),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=_h("Teacher model.", "model"))] = None,
    base_url: Annotated[str | None, typer.Option(help=_h("OpenAI-compatible endpoint.", "base_url"))] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help=_h("Hard cap on USD billed for this run dir.", "budget_usd")),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(help=_h("Completion cap per answer, tokens.", "max_tokens")),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help=_h("Sampling temperature (Orca: 0.7).", "temperature")),
    ] = None,
    top_p: Annotated[float | None, typer.Option(help=_h("Nucleus sampling (Orca: 0.95).", "top_p"))] = None,
    rpm: Annotated[
        float | None,
        typer.Option("--rpm", help=_h("Requests per minute, client side.", "requests_per_minute")),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option("--tpm", help=_h("Tokens per minute, client side.", "tokens_per_minute")),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help=_h("Requests in flight at most.", "concurrency"))
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option(help=_h("Stop after this many requests sent.", "max_requests")),
    ] = None,
    max_total_tokens: Annotated[
        int | None,
        typer.Option(help=_h("Stop after this many tokens billed.", "max_total_tokens")),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help=_h("Per-request timeout, seconds.", "timeout_s")),
    ] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option(help=_h("Attempts per request before failed.jsonl.", "max_attempts")),
    ] = None,
    input_price: Annotated[
        float | None,
        typer.Option(help=_h("USD per 1M input tokens (overrides table).", "input_price")),
    ] = None,
    output_price: Annotated[
        float | None,
        typer.Option(help=_h("USD per 1M output tokens (overrides table).", "output_price")),
    ] = None,
    expected_output_tokens: Annotated[
        int | None,
        typer.Option(
            show_default=DEFAULTS["expected_output_tokens"],
            help="Assumed mean answer length for the expected cost, tokens.",
        ),
    ] = None,
    price_file: Annotated[
        str | None, typer.Option(help="YAML price file adding models to the table (see `tracegen models`).")
    ] = None,
    reasoning_effort: Annotated[
        str | None, typer.Option(help="Reasoning models: minimal | low | medium | high.")
    ] = None,
    expected_reasoning_tokens: Annotated[
        int | None,
        typer.Option(help="Reasoning models: hidden reasoning tokens assumed per answer (dry run; 1024)."),
    ] = None,
    templates: Annotated[
        str | None,
        typer.Option(help=_h("Template set file (Orca 2 style, YAML/JSON).", "templates")),
    ] = None,
    spelling: Annotated[
        str | None,
        typer.Option(
            "--spelling",
            show_default=DEFAULTS["system_message_spelling"],
            help="verbatim | ascii system messages.",
        ),
    ] = None,
    mc_detector: Annotated[
        str | None, typer.Option(help=_h("auto | options | template.", "mc_detector"))
    ] = None,
    skip_bad_records: Annotated[
        bool | None,
        typer.Option("--skip-bad-records/--no-skip-bad-records", help="Log bad source records and go on."),
    ] = None,
    on_too_long: Annotated[
        str | None,
        typer.Option(help=_h("reject | fail, for prompts over the context.", "on_too_long")),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help=_h("online | batch (Batch API, half price).", "mode")),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option(help=_h("http (own client, fastest) | aiohttp | sdk (AsyncOpenAI).", "transport")),
    ] = None,
    fill_shortfall: Annotated[
        bool | None,
        typer.Option(
            "--fill-shortfall",
            help="Give a submix's missing rows (too few eligible) to the others, in proportion to the mix.",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            "--poll-interval",
            show_default=DEFAULTS["batch_poll_interval_s"],
            help="Batch mode: seconds between status polls.",
        ),
    ] = None,
    finish_online: Annotated[
        bool | None,
        typer.Option(
            "--finish-online/--no-finish-online",
            help="Batch mode: answer online what ran out of batch attempts.",
        ),
    ] = None,
    max_batches_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-batches-in-flight", help="Batch mode: batches in flight at most (default: no cap)."
        ),
    ] = None,
    keep_batch_files: Annotated[
        bool | None,
        typer.Option(
            "--keep-batch-files", help="Batch mode: keep our files on the provider after collection."
        ),
    ] = None,
    retry_length: Annotated[
        bool | None,
        typer.Option("--retry-length/--no-retry-length", help="Retry truncated answers with 2x max tokens."),
    ] = None,
    max_failure_rate: Annotated[
        float | None,
        typer.Option(
            "--max-failure-rate",
            help="Exit 4 when more than this share (0-1) of the records failed (default 0.1).",
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: run the K-th of N deterministic shards; auto: from the scheduler's array index."
        ),
    ] = None,
    shard_count: Annotated[
        int | None, typer.Option(help="N for --shard auto on Kubernetes indexed Jobs (their completions).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and estimate the cost; send nothing.")
    ] = False,
    extend: Annotated[
        bool, typer.Option("--extend", help="Allow a larger --n on an existing run dir.")
    ] = False,
    rehearse: Annotated[
        bool,
        typer.Option("--rehearse", help="Answer with the built-in fake server: no key, no network, no cost."),
    ] = False,
    export_format: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help=_h(
                "Export formats: openorca, full, alpaca, sharegpt, messages (repeatable).", "export_formats"
            ),
        ),
    ] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="Push the dataset to this Hub repo when done.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    decontaminate: Annotated[
        list[str] | None,
        typer.Option(
            "--decontaminate",
            help="Evaluation set (.jsonl/.json/.parquet or Hub id, optionally :col1,col2) whose items no "
            "planned question may overlap (13-gram / exact match); repeatable.",
        ),
    ] = None,
) -> None:
    """Plan, ask the teacher within --budget, clean, export (and push). Rerun to resume."""
    params = dict(locals())
    from . import pipeline

    def go() -> None:
        config = _config(config_file, **config_flags(params))
        if dry_run:
            est = pipeline.estimate_run(config, extend=extend)
            _print(progress_view.estimate_table(est), est, as_json)
            return
        with progress_view.live(console, plain=not sys.stderr.isatty()) as on_progress:
            summary = pipeline.run(
                config,
                extend=extend,
                rehearse=rehearse,
                on_progress=on_progress,
                on_stage=stage_printer(console),
            )
        _print(progress_view.summary_table(summary), summary, as_json)
        code = run_exit_line(console, summary, config.max_failure_rate, config.output_dir)
        if code:
            raise typer.Exit(code)

    _guard(go)


@app.command()
def estimate(
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", metavar="SOURCE", help=_h("FLAN v2 source (repeatable).", "source")),
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="Run config file.")] = None,
    n: Annotated[int | None, typer.Option("--n", help=_h("Requests to plan.", "n"))] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=_h("Teacher model.", "model"))] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", help=_h("USD budget to compare with.", "budget_usd")),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(help=_h("Completion cap per answer, tokens.", "max_tokens")),
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_h("Seed.", "seed"))] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help=_h("Run directory.", "output_dir")),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    price_file: Annotated[
        str | None, typer.Option(help="YAML price file adding models to the table (see `tracegen models`).")
    ] = None,
    decontaminate: Annotated[
        list[str] | None,
        typer.Option("--decontaminate", help="Evaluation set to decontaminate against (repeatable)."),
    ] = None,
) -> None:
    """Same as `run --dry-run`: the plan and its cost, nothing sent."""
    params = dict(locals())
    from . import pipeline

    def go() -> None:
        config = _config(config_file, **config_flags(params))
        est = pipeline.estimate_run(config)
        _print(progress_view.estimate_table(est), est, as_json)

    _guard(go)


@app.command()
def models(
    price_file: Annotated[
        str | None, typer.Option(help="Also list the models of this YAML price file (they win).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """The price table: exact model ids, encoding, context window, online and batch prices, reasoning."""
    from .planning.prices import table_rows

    def go() -> None:
        rows, note = table_rows(price_file)
        if as_json:
            _print(None, {"note": note, "models": rows}, as_json)
        else:  # wide enough for every id and price, even when piped
            Console(width=max(out.width, 110)).print(progress_view.models_table(rows, note))

    _guard(go)


# ---- after the run ---------------------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory.")],
    export_format: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="openorca, full, alpaca, sharegpt, messages (TRL).  [default: the run's formats]",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Export directory.  [default: RUN_DIR/dataset]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Filter, deduplicate and export a run directory again, calling no API."""
    from . import pipeline

    def go() -> None:
        result = pipeline.finish(run_dir, formats=export_format or None, output_dir=output)
        _print(progress_view.dict_table("export", result), result, as_json)

    _guard(go)


@app.command()
def stats(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the run summary: plan, spend, outcomes, filters, dedup."""
    from .publish.export import run_summary

    def go() -> None:
        summary = run_summary(run_dir)
        _print(progress_view.summary_table(summary), summary, as_json)

    _guard(go)


@app.command()
def push(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="Run directory (or its export directory).")
    ],
    repo_id: Annotated[str, typer.Argument(metavar="REPO_ID", help="Hub dataset repo, e.g. me/my-orca.")],
    private: Annotated[bool, typer.Option("--private/--public", help="Repo visibility.")] = True,
    config_name: Annotated[str | None, typer.Option(help="Push only this export config.")] = None,
) -> None:
    """Push an exported dataset with its card to the Hugging Face Hub (token: HF_TOKEN or `hf auth login`)."""
    from .publish.hub import push as hub_push

    def go() -> None:
        result = hub_push(run_dir, repo_id, private=private, config_name=config_name)
        out.print(progress_view.safe(f"pushed to {result.url}"), highlight=False)

    _guard(go)


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run directories to combine.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Combine run directories (shards, resumed runs) with global dedup into one."""
    from . import pipeline

    def go() -> None:
        result = pipeline.merge(run_dirs, output)
        _print(progress_view.dict_table("merge", result), result, as_json)

    _guard(go)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
) -> None:
    """Write RUN_DIR/report.html: one self-contained page (spend, mix, drops, lengths, sample browser)."""
    from .report import write_report

    def go() -> None:
        path = write_report(run_dir)
        out.print(
            f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB); open it in a browser (works offline)"
        )

    _guard(go)


# ---- the fake server ------------------------------------------------------------------------------------------
@app.command(
    "fake-server",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def fake_server(ctx: typer.Context) -> None:
    """Serve an OpenAI-compatible fake teacher for offline rehearsals (synthetic answers; --help lists options).

    Point a run at it with OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and any OPENAI_API_KEY.
    """
    from .testing.fake_openai import main as fake_main

    raise typer.Exit(fake_main(list(ctx.args), prog="tracegen fake-server"))


# ---- batch -----------------------------------------------------------------------------------------------------
@batch_app.command("status")
def batch_status(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory of a --mode batch run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show every batch of the run: status and request counts."""
    from . import pipeline

    def go() -> None:
        rows = pipeline.batch_status(run_dir)
        _print(progress_view.batch_table(rows), rows, as_json)

    _guard(go)


@batch_app.command("cancel")
def batch_cancel(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory of a --mode batch run.")],
) -> None:
    """Cancel every batch of the run still in flight (partial results stay collectable)."""
    from . import pipeline

    def go() -> None:
        rows = pipeline.batch_cancel(run_dir)
        out.print(progress_view.batch_table(rows))

    _guard(go)


def _print(renderable: Any, data: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(redact(json.dumps(data, default=str)))
    else:
        out.print(renderable)


def _app_for(argv: list[str]) -> typer.Typer:
    """The app, or an app of the one command ``argv`` names when it names one (``tracegen run ...``).

    Typer turns every command into Click objects before it runs one (some 20 ms for the eleven); a command
    needs only its own. ``--help``, no arguments, a subcommand group or an unknown command (whose error
    suggests the close names) get the whole app, so what the group lists and says is unchanged.
    """
    if not argv:
        return app
    for info in app.registered_commands:
        callback = info.callback.__name__ if info.callback is not None else ""
        if (info.name or typer.main.get_command_name(callback)) == argv[0]:
            alone = copy.copy(app)
            alone.registered_commands, alone.registered_groups = [info], []
            return alone
    return app


def main() -> None:
    """The console script: the app, then an exit that skips tearing the interpreter down (:func:`quick_exit`)."""
    try:
        _app_for(sys.argv[1:])(prog_name="tracegen")
        code = 0
    except SystemExit as e:
        code = exit_code_of(e.code)
    quick_exit(code)


if __name__ == "__main__":
    main()
