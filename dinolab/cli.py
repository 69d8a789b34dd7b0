"""The ``dinolab`` command: a thin dispatcher over :mod:`dinolab.commands`.

Each module in ``dinolab/commands/`` is one sub-command. It defines
``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
inside ``run`` so that ``dinolab --help`` stays fast. The first line of the
module docstring is the command's one-line help.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import __version__
from .errors import DinolabError

# The order in which commands are listed in --help; others follow alphabetically.
_ORDER = ["train", "embed", "knn", "linear", "fewshot", "attention", "objects", "pca", "propagate", "retrieve",
          "dedup", "curate", "convert", "export", "report", "bench", "align", "zeroshot", "search"]


def _command_modules() -> list[str]:
    from . import commands

    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dinolab",
        description="DINO / DINOv2 / DINOv3 self-supervised vision: train, embed, evaluate, look, curate.",
    )
    parser.add_argument("--version", action="version", version=f"dinolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        mod = importlib.import_module(f"dinolab.commands.{name}")
        doc = (mod.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else name
        p = sub.add_parser(name, help=summary, description=(mod.__doc__ or summary).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except DinolabError as e:
        print(f"dinolab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dinolab {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> int:
    """The ``dinolab`` console script: :func:`main` with stdout printing file names that are not UTF-8 as
    their own bytes (as ``ls`` does) instead of failing on them. Not done in :func:`main`, which may run
    inside a host program whose stdout is not ours to change."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    return main()


if __name__ == "__main__":
    sys.exit(entry())
