"""What the A/B scripts of bench/ share: their arguments and the median training step of a fresh trainer.

Used by ``bench_optimizer.py`` and ``bench_patch_embed.py`` (run as ``python bench/X.py``, so this folder
is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

from dinolab.train.config import load_config  # noqa: E402
from dinolab.train.trainer import Trainer  # noqa: E402


def ab_arguments(description: str, steps: int) -> argparse.Namespace:
    """``PRESET [key=value ...] --rounds --steps --threads``; sets torch's thread count when given."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("preset", nargs="?", default="default")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--steps", type=int, default=steps, help=f"timed training steps per round (default {steps})")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def new_trainer(preset: str, overrides: list[str]) -> Trainer:
    """A trainer of the config in a scratch directory, long enough never to finish."""
    return Trainer(load_config(preset, ["train.epochs=1000", *overrides]), tempfile.mkdtemp())


def median_step_ms(trainer: Trainer, steps: int, warmup: int = 5) -> float:
    """Median ms of :meth:`Trainer.train_step` (crops, forward, backward, optimizer, EMA) over ``steps`` steps."""
    batches = iter(trainer.batches(trainer.setup()))
    times = []
    for n in range(warmup + steps):
        it, micro = next(batches)
        t = time.perf_counter()
        trainer.train_step(it, micro)
        if n >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
