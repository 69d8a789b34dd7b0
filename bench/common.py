"""Shared entry point of the bench/ scripts: each is ``dinolab bench WHAT`` with the script's arguments.

The scripts exist for people who browse ``bench/``; the code they run is :mod:`dinolab.bench`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout, not an installed copy
from dinolab.cli import main  # noqa: E402


def run(what: str) -> None:
    """Run ``dinolab bench WHAT`` with this process's command-line arguments and exit with its code."""
    sys.exit(main(["bench", what, *sys.argv[1:]]))
