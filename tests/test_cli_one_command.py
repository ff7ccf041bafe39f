"""The console script builds only the command it runs (Typer turns every command into Click objects before it
runs one); what every command accepts and prints, and what the group lists and suggests, stays the same."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from tracegen import cli

COMMANDS = ["run", "estimate", "models", "export", "stats", "push", "merge", "report", "fake-server"]


def _names(app: typer.Typer) -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_command_of_the_app_is_listed_here() -> None:
    assert _names(cli.app) == sorted([*COMMANDS, "batch"])


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_gets_an_app_of_that_command_alone(name: str) -> None:
    alone = cli._app_for([name, "--whatever"])
    assert alone is not cli.app
    assert _names(alone) == [name]
    assert _names(cli.app) == sorted([*COMMANDS, "batch"])  # the app itself is left whole


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["runn"], ["batch", "status"], ["-s", "x"]])
def test_anything_else_gets_the_whole_app(argv: list[str]) -> None:
    assert cli._app_for(argv) is cli.app


@pytest.mark.parametrize("name", [c for c in COMMANDS if c != "fake-server"])
def test_a_command_alone_has_the_same_help_and_options(name: str) -> None:
    runner = CliRunner()
    whole = runner.invoke(cli.app, [name, "--help"], prog_name="tracegen", terminal_width=100)
    alone = runner.invoke(cli._app_for([name]), [name, "--help"], prog_name="tracegen", terminal_width=100)
    assert whole.exit_code == alone.exit_code == 0
    assert alone.output == whole.output and f"tracegen {name}" in alone.output
    whole_params = typer.main.get_command(cli.app).commands[name].params  # type: ignore[attr-defined]
    alone_params = typer.main.get_command(cli._app_for([name])).commands[name].params  # type: ignore[attr-defined]
    assert [p.opts for p in alone_params] == [p.opts for p in whole_params]


def test_a_usage_error_reads_the_same(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = []
    for argv in (["run", "--nope"], ["runn"]):
        monkeypatch.setattr("sys.argv", ["tracegen", *argv])
        with pytest.raises(SystemExit) as e:
            cli._app_for(argv)(prog_name="tracegen")
        assert e.value.code == 1
        lines.append(" ".join(capsys.readouterr().err.split()))
    assert lines[0].startswith("error: No such option: --nope") and "tracegen run --help" in lines[0]
    assert "Did you mean 'run'?" in lines[1]  # the suggestion needs every command's name
