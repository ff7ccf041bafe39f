"""tracegen: Orca-style explanation-trace datasets."""

from ._version import __version__

__all__ = ["__version__"]
