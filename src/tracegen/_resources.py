"""Find the files under ``prompts/`` both when tracegen is installed and when it is editable-installed.

An installed wheel carries them as package data ``tracegen/prompts/`` (pyproject's ``force-include``); an
editable install or a source checkout has them at the repository root, ``<repo>/prompts/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError

__all__ = ["prompt_path", "prompts_dir"]


def prompts_dir() -> Path:
    """The directory holding tracegen's prompt files (installed package data first, then the checkout)."""
    try:
        packaged = Path(str(resources.files("tracegen").joinpath("prompts")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - tracegen is always importable here
        packaged = None
    if packaged is not None and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "prompts"


def prompt_path(name: str) -> Path:
    """Path of ``prompts/<name>``; raises ConfigError when the file is missing from the installation."""
    path = prompts_dir() / name
    if not path.is_file():
        raise ConfigError(
            f"prompt file {name!r} not found at {path}; reinstall tracegen (pip install -e .) "
            "or pass an explicit file path"
        )
    return path
