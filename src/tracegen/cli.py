"""The tracegen command line: a thin Typer layer over the library.

Every command maps flags onto :class:`tracegen.config.RunConfig` (flag > config file > environment > default),
calls one library function, and renders what it returns. A :class:`tracegen.errors.TracegenError` becomes one
red line and exit code 1 — never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from . import progress_view
from .errors import TracegenError

app = typer.Typer(
    name="tracegen",
    help="Manufacture Orca-style explanation-trace datasets from FLAN v2 with a teacher model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
batch_app = typer.Typer(
    help="Inspect and cancel OpenAI Batch API jobs of a run directory.", no_args_is_help=True
)
app.add_typer(batch_app, name="batch")

console = Console(stderr=True)
out = Console()

T = TypeVar("T")

# CLI flag -> RunConfig field, so errors name the flag the user typed.
FLAGS = {
    "budget_usd": "--budget",
    "requests_per_minute": "--rpm",
    "tokens_per_minute": "--tpm",
    "timeout_s": "--timeout",
    "system_message_spelling": "--spelling",
    "output_dir": "--output-dir",
    "batch_poll_interval_s": "--poll-interval",
    "batch_finish_online": "--finish-online",
}


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a TracegenError becomes one line on stderr and exit code 1."""
    try:
        return fn()
    except TracegenError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to continue where it stopped")
        raise typer.Exit(130) from None


def _config(config_file: Path | None, **flags: Any) -> Any:
    from .config import load_config

    return load_config(config_file, flags, flag_names=FLAGS)


# ---- run -----------------------------------------------------------------------------------------------------
@app.command()
def run(
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source", "-s", help="FLAN v2 file, glob, directory, saved dataset or Hub id (repeatable)."
        ),
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="Run config file (YAML/JSON).")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Requests to plan (default 1,000,000).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling and system messages.")] = None,
    mix: Annotated[str | None, typer.Option(help="orca | uniform (share tables: config file).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Teacher model.")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint (default OPENAI_BASE_URL).")
    ] = None,
    budget: Annotated[
        float | None, typer.Option("--budget", help="Hard cap on USD billed for this run dir.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion cap per answer, tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (Orca: 0.7).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling (Orca: 0.95).")] = None,
    rpm: Annotated[float | None, typer.Option("--rpm", help="Requests per minute, client side.")] = None,
    tpm: Annotated[float | None, typer.Option("--tpm", help="Tokens per minute, client side.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at most.")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Stop after this many requests sent.")] = None,
    max_total_tokens: Annotated[int | None, typer.Option(help="Stop after this many tokens billed.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Per-request timeout, seconds.")] = None,
    max_attempts: Annotated[
        int | None, typer.Option(help="Attempts per request before failed.jsonl.")
    ] = None,
    input_price: Annotated[
        float | None, typer.Option(help="USD per 1M input tokens (overrides table).")
    ] = None,
    output_price: Annotated[
        float | None, typer.Option(help="USD per 1M output tokens (overrides table).")
    ] = None,
    expected_output_tokens: Annotated[
        int | None, typer.Option(help="Assumed mean answer length for the expected cost, tokens.")
    ] = None,
    templates: Annotated[
        str | None, typer.Option(help="Template set file (Orca 2 style, YAML/JSON).")
    ] = None,
    spelling: Annotated[
        str | None, typer.Option("--spelling", help="verbatim | ascii system messages.")
    ] = None,
    mc_detector: Annotated[str | None, typer.Option(help="auto | options | template.")] = None,
    skip_bad_records: Annotated[
        bool | None, typer.Option("--skip-bad-records", help="Log bad source records and go on.")
    ] = None,
    on_too_long: Annotated[
        str | None, typer.Option(help="reject | fail, for prompts over the context.")
    ] = None,
    fill_shortfall: Annotated[
        bool | None,
        typer.Option(
            "--fill-shortfall",
            help="Give a submix's missing rows (too few eligible) to the others, in proportion to the mix.",
        ),
    ] = None,
    mode: Annotated[str | None, typer.Option(help="online | batch (Batch API, half price).")] = None,
    transport: Annotated[str | None, typer.Option(help="aiohttp (fast) | sdk (AsyncOpenAI).")] = None,
    poll_interval: Annotated[
        float | None, typer.Option("--poll-interval", help="Batch mode: seconds between status polls.")
    ] = None,
    finish_online: Annotated[
        bool | None,
        typer.Option("--finish-online", help="Batch mode: answer online what ran out of batch attempts."),
    ] = None,
    retry_length: Annotated[
        bool | None, typer.Option("--retry-length", help="Retry truncated answers with 2x max tokens.")
    ] = None,
    shard: Annotated[str | None, typer.Option(help="K/N: run the K-th of N deterministic shards.")] = None,
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
        list[str] | None, typer.Option("--format", help="Export formats: openorca, full, alpaca, sharegpt.")
    ] = None,
    push_to_hub: Annotated[
        str | None, typer.Option(help="Push the dataset to this Hub repo when done.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Plan, ask the teacher within --budget, clean, export (and push). Rerun to resume."""
    from . import pipeline

    def go() -> None:
        config = _config(
            config_file,
            source=source or None,
            output_dir=output_dir,
            n=n,
            seed=seed,
            mix=mix,
            model=model,
            base_url=base_url,
            budget_usd=budget,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            concurrency=concurrency,
            max_requests=max_requests,
            max_total_tokens=max_total_tokens,
            timeout_s=timeout,
            max_attempts=max_attempts,
            input_price=input_price,
            output_price=output_price,
            expected_output_tokens=expected_output_tokens,
            templates=templates,
            system_message_spelling=spelling,
            mc_detector=mc_detector,
            skip_bad_records=skip_bad_records,
            on_too_long=on_too_long,
            fill_shortfall=fill_shortfall,
            mode=mode,
            transport=transport,
            batch_poll_interval_s=poll_interval,
            batch_finish_online=finish_online,
            retry_length=retry_length,
            shard=shard,
            export_formats=export_format or None,
            push_to_hub=push_to_hub,
        )
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
                on_stage=lambda msg: console.print(
                    f"[yellow]{msg}[/]" if msg.startswith("warning:") else f"[dim]{msg}[/]"
                ),
            )
        _print(progress_view.summary_table(summary), summary, as_json)

    _guard(go)


@app.command()
def estimate(
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="FLAN v2 source (repeatable).")
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="Run config file.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Requests to plan.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Teacher model.")] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="USD budget to compare with.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion cap per answer, tokens.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Same as `run --dry-run`: the plan and its cost, nothing sent."""
    from . import pipeline

    def go() -> None:
        config = _config(
            config_file,
            source=source or None,
            n=n,
            model=model,
            budget_usd=budget,
            max_tokens=max_tokens,
            seed=seed,
            output_dir=output_dir,
        )
        est = pipeline.estimate_run(config)
        _print(progress_view.estimate_table(est), est, as_json)

    _guard(go)


# ---- after the run ---------------------------------------------------------------------------------------------
@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    export_format: Annotated[
        list[str] | None, typer.Option("--format", help="openorca (default), full, alpaca, sharegpt.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Export dir (default RUN_DIR/dataset).")
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
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Print the run summary: plan, spend, outcomes, filters, dedup."""
    from .export import run_summary

    def go() -> None:
        summary = run_summary(run_dir)
        _print(progress_view.summary_table(summary), summary, as_json)

    _guard(go)


@app.command()
def push(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or its export directory).")],
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo, e.g. me/my-orca.")],
    private: Annotated[bool, typer.Option("--private/--public", help="Repo visibility.")] = True,
    config_name: Annotated[str | None, typer.Option(help="Push only this export config.")] = None,
) -> None:
    """Push an exported dataset with its card to the Hugging Face Hub (token: HF_TOKEN or `hf auth login`)."""
    from . import pipeline

    def go() -> None:
        result = pipeline.push(run_dir, repo_id, private=private, config_name=config_name)
        out.print(f"pushed to {result['url']}")

    _guard(go)


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to combine.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Combine run directories (shards, resumed runs) with global dedup into one."""
    from . import pipeline

    def go() -> None:
        result = pipeline.merge(run_dirs, output)
        _print(progress_view.dict_table("merge", result), result, as_json)

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

    raise typer.Exit(fake_main(list(ctx.args)))


# ---- batch -----------------------------------------------------------------------------------------------------
@batch_app.command("status")
def batch_status(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a --mode batch run.")],
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
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a --mode batch run.")],
) -> None:
    """Cancel every batch of the run still in flight (partial results stay collectable)."""
    from . import pipeline

    def go() -> None:
        rows = pipeline.batch_cancel(run_dir)
        out.print(progress_view.batch_table(rows))

    _guard(go)


def _print(renderable: Any, data: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    else:
        out.print(renderable)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
