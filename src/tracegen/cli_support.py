"""What the CLI needs besides its commands: one-line errors, usage errors, and the commands a refusal suggests.

Every user error ends the same way: one line ``error: …`` on stderr, exit code 1, no traceback, and user text
(paths, sources, YAML snippets) printed verbatim, never read as Rich markup. That covers tracegen's own errors
(:class:`~tracegen.errors.TracegenError`), Typer/Click usage errors (unknown flag, bad value, missing
argument: Click's own exit code would be 2) and an ``OSError`` from a path tracegen writes.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.text import Text

from . import progress_view
from .errors import SettingChangedError, TracegenError
from .outcome import EXIT_INTERRUPTED, error_exit_code, run_exit
from .redact import terminal_text
from .rundir import STAGES, RunPaths, read_json_if_exists

try:  # Typer >= 0.24 carries its own copy of Click
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - older Typer over Click
    from click import exceptions as click  # type: ignore[no-redef]

__all__ = [
    "DEFAULTS",
    "EXIT_USER_ERROR",
    "FLAGS",
    "TracegenGroup",
    "config_flags",
    "error_line",
    "guard",
    "print_error",
    "rerun_commands",
    "rerun_with",
    "run_exit_line",
    "stage_printer",
]

EXIT_USER_ERROR = 1

#: The arguments of the command line being run (``sys.argv[1:]`` or what a test passed), for rerun commands.
ARGV: list[str] = []

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
    "max_failure_rate": "--max-failure-rate",
    "batch_max_in_flight": "--max-batches-in-flight",
    "batch_keep_files": "--keep-batch-files",
}

# What a flag left out means (RunConfig's defaults, pinned by tests/test_newcomer_cli.py), shown in --help.
DEFAULTS = {
    "source": "flan-v2 (streamed from the Hub)",
    "output_dir": "tracegen-run",
    "n": "1000000",
    "seed": "0",
    "mix": "orca",
    "model": "gpt-4o-mini",
    "base_url": "$OPENAI_BASE_URL, else https://api.openai.com/v1",
    "budget_usd": "no cap",
    "max_tokens": "1024",
    "temperature": "0.7",
    "top_p": "0.95",
    "requests_per_minute": "none; learned from x-ratelimit headers",
    "tokens_per_minute": "none; learned from x-ratelimit headers",
    "concurrency": "256",
    "max_requests": "no cap",
    "max_total_tokens": "no cap",
    "timeout_s": "600",
    "max_attempts": "8",
    "input_price": "the model's list price",
    "output_price": "the model's list price",
    "expected_output_tokens": "350",
    "templates": "Orca's 16 system messages",
    "system_message_spelling": "verbatim",
    "mc_detector": "auto",
    "on_too_long": "reject",
    "mode": "online",
    "transport": "http",
    "batch_poll_interval_s": "30",
    "export_formats": "openorca, full",
}


# `tracegen run`/`estimate` parameter -> RunConfig field, where the names differ; parameters that are not fields.
_RUN_FIELDS = {
    "budget": "budget_usd",
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "timeout": "timeout_s",
    "spelling": "system_message_spelling",
    "poll_interval": "batch_poll_interval_s",
    "finish_online": "batch_finish_online",
    "max_batches_in_flight": "batch_max_in_flight",
    "keep_batch_files": "batch_keep_files",
    "export_format": "export_formats",
}
_NOT_FIELDS = {"config_file", "dry_run", "extend", "rehearse", "as_json"}


def config_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The RunConfig overrides of a command's parameters (an empty repeatable flag = not given)."""
    return {
        _RUN_FIELDS.get(k, k): (v or None) if isinstance(v, list) else v
        for k, v in params.items()
        if k not in _NOT_FIELDS
    }


def stage_printer(console: Console) -> Callable[[str], None]:
    """The run's ``on_stage``: one dim line per step, warnings in yellow."""

    def on_stage(msg: str) -> None:
        console.print(
            progress_view.safe(msg, "yellow" if msg.startswith("warning:") else "dim"), highlight=False
        )

    return on_stage


def run_exit_line(
    console: Console, summary: Mapping[str, Any], max_failure_rate: float, run_dir: Path | None = None
) -> int:
    """Say why the run stopped short (budget: the rerun command), and return its exit code.

    ``run_dir``: where a staged run's stats.json holds its ``to_finish`` (its summary keeps flat keys only).
    """
    run: Mapping[str, Any] = summary.get("run") or {}
    if run.get("stop_reason") == "budget" and "to_finish" not in run and run_dir is not None:
        written = read_json_if_exists(RunPaths(run_dir).stats)
        if isinstance(written, Mapping) and isinstance(written.get("to_finish"), Mapping):
            run = {**run, "to_finish": written["to_finish"]}
    stopped = progress_view.budget_stop_line(run, lambda usd: rerun_with(ARGV, "--budget", f"{usd:g}"))
    if stopped:
        console.print(progress_view.safe(stopped, "yellow"), highlight=False, soft_wrap=True)
    code, why = run_exit(summary, max_failure_rate)
    if code:
        console.print(
            Text(f"exit {code}: ", style="bold red") + progress_view.safe(why),
            highlight=False,
            soft_wrap=True,
        )
    return code


def error_line(e: BaseException) -> str:
    """The one line a user sees for ``e`` (newlines folded, so it stays one line)."""
    if isinstance(e, OSError) and not isinstance(e, TracegenError):
        where = f"{e.filename}: " if e.filename else ""
        what = e.strerror or str(e)
        text = f"{where}cannot write ({what}); check the path, free disk space and permissions"
    else:
        text = str(e)
    return " ".join(text.split())


def print_error(console: Console, message: str) -> None:
    """``error: message`` in red, the message verbatim (no markup, no highlighting), redacted, controls escaped."""
    line = Text("error:", style="bold red")
    line.append(" " + terminal_text(message))
    console.print(line, highlight=False, soft_wrap=True)


class TracegenGroup(typer.core.TyperGroup):
    """Typer's group with Click's usage errors as one line and exit code 1 (Click's default is a box, 2)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        ARGV[:] = argv
        try:
            rv = super().main(argv, prog_name or "tracegen", complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as e:
            print(e.ctx.get_help())
            rv = 0
        except click.ClickException as e:
            if not standalone_mode:
                raise
            err = Console(stderr=True)
            message = e.format_message()
            ctx = getattr(e, "ctx", None)
            if isinstance(e, click.UsageError) and ctx is not None:
                message += f" (see `{ctx.command_path} --help`)"
            print_error(err, " ".join(message.split()))
            sys.exit(EXIT_USER_ERROR)
        except typer.Abort:
            if not standalone_mode:
                raise
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def rerun_commands(
    e: SettingChangedError, argv: Sequence[str], config_flags: set[str], flag_names: Mapping[str, str]
) -> str:
    """``e``'s problem with the exact commands that start over (a new --output-dir) or continue.

    ``argv`` is the command line as typed (``run …``); ``config_flags`` the option names ``run`` accepts;
    ``flag_names`` maps a RunConfig field to its flag where the two differ (``budget_usd`` -> ``--budget``).
    """
    top = Path(e.path)
    if top.parent.name == STAGES:  # a stage's sub directory: start the whole run over
        top = top.parent.parent
    fresh = _fresh_dir(top)
    start = _set_flag(list(argv), ("--output-dir", "-o"), [str(fresh)])
    parts = [f"{e.what}: start over with `{_cmd(start)}`"]
    cont = _continue(list(argv), e, config_flags, flag_names)
    if cont is not None:
        parts.append(f"or continue with `{_cmd(cont)}`")
    else:
        parts.append(f"or {e.remedy.split(', or ', 1)[-1]}" if ", or " in e.remedy else e.remedy)
    return ", ".join(parts)


def rerun_with(argv: Sequence[str], flag: str, value: str) -> str:
    """The command line ``argv`` with ``flag`` set to ``value`` (replacing it when given), as typed."""
    return _cmd(_set_flag(list(argv), (flag,), [value]))


def _cmd(argv: Sequence[str]) -> str:
    return "tracegen " + shlex.join(argv)


def _fresh_dir(path: Path) -> Path:
    k = 2
    while True:
        candidate = path.with_name(f"{path.name}-{k}")
        if not candidate.exists():
            return candidate
        k += 1


def _without(argv: list[str], names: Sequence[str]) -> list[str]:
    """``argv`` without every occurrence of the options ``names`` (``--x v``, ``--x=v``, ``-x v``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(n + "=") for n in names if n.startswith("--")):
            continue
        out.append(arg)
    return out


def _set_flag(argv: list[str], names: Sequence[str], values: Sequence[str]) -> list[str]:
    out = _without(argv, names)
    for v in values:
        out += [names[0], v]
    return out


def _continue(
    argv: list[str], e: SettingChangedError, config_flags: set[str], flag_names: Mapping[str, str]
) -> list[str] | None:
    if e.field == "rehearse":
        plain = [a for a in argv if a != "--rehearse"]
        return [*plain, "--rehearse"] if e.old else plain
    flag = flag_names.get(e.field, "--" + e.field.replace("_", "-"))
    if flag not in config_flags:
        return None
    names = [flag] + (["-s"] if flag == "--source" else ["-m"] if flag == "--model" else [])
    old = e.old
    if old is None:
        return _without(argv, names) if any(a in names or a.startswith(flag + "=") for a in argv) else None
    if isinstance(old, list) and all(isinstance(v, str) for v in old):
        return _set_flag(argv, names, old)
    if isinstance(old, (str, int, float)) and not isinstance(old, bool):
        return _set_flag(argv, names, [str(old)])
    return None


T = TypeVar("T")


def guard(fn: Callable[[], T], console: Console, run_flags: Callable[[], set[str]]) -> T:
    """Run ``fn``; a TracegenError or an OSError (a path tracegen writes) becomes one line on ``console``.

    Exits 1 (4: the teacher's; 130: Ctrl-C). A changed setting gets the commands that resolve it, naming only
    flags of ``tracegen run`` (``run_flags``).
    """
    try:
        return fn()
    except SettingChangedError as e:
        print_error(console, rerun_commands(e, ARGV, run_flags(), FLAGS))
        raise typer.Exit(EXIT_USER_ERROR) from None
    except TracegenError as e:
        print_error(console, error_line(e))
        raise typer.Exit(error_exit_code(e)) from None
    except OSError as e:
        print_error(console, error_line(e))
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to continue where it stopped")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def exit_code_of(code: object) -> int:
    """The process exit code of ``SystemExit(code)`` (a message is printed to stderr, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def quick_exit(code: int) -> None:
    """End the process without tearing the interpreter down.

    Freeing ~650 modules and their objects at exit costs a whole command 0.1-0.3 s (more on a loaded
    machine) and does nothing a finished command needs: files are closed by then, and the exit handlers
    (atexit: logging, temporary directories, thread pools) still run first. Under a profiler or debugger
    (which write their results after main returns) it is a normal exit.
    """
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`tracegen ... | head`) or stream
            code = code or 1
    os._exit(code)
