"""The test suite's shared helpers (one package, importable from every test folder: ``pythonpath = ["tests"]``).

``clean``: fixture run directories for clean/merge tests; ``batch``: Batch API run drivers (also run as a
script in a child process for the kill tests); ``export``: records and run directories for export/card tests;
``flan``: FLAN-shaped rows and the bundled sample; ``engine_driver``: the engine in a child process (kill -9).
"""

from pathlib import Path

#: The repository root (tests/helpers/__init__.py -> ../..).
REPO = Path(__file__).resolve().parents[2]
#: This package's folder (its modules also run as scripts in child processes).
HELPERS = Path(__file__).resolve().parent
#: The bundled example source.
SAMPLE = str(REPO / "examples" / "flan_sample")
