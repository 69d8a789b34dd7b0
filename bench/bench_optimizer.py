"""AdamW kernels on a config's student: the optimizer step alone and whole training steps, foreach vs fused.

:func:`dinolab.train.optim.adamw_kernel` picks ``fused`` for plain CPU / CUDA tensors. This measures
what that buys on the config's own parameters (default: the embedded default), in one process and one
interleaved sequence (A B A B ...), so the ratio holds on a busy machine:

- **optimizer step**: ``AdamW.step`` alone on copies of the student's parameters with fixed gradients;
- **training step**: :meth:`Trainer.train_step` (crops, forward, backward, clipping, optimizer, EMA) of a
  fresh trainer per round, the median of ``--steps`` steps after 5 warm-up steps.

Examples:
  python bench/bench_optimizer.py --threads 1
  python bench/bench_optimizer.py dinov2_shapes --rounds 2
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

import dinolab.train.optim as optim  # noqa: E402
from dinolab.train.config import load_config  # noqa: E402
from dinolab.train.trainer import Trainer  # noqa: E402

KERNELS = ("foreach", "fused")


def optimizer_step_ms(params: list[torch.Tensor], kernel: str, calls: int = 50) -> float:
    """Mean ms of one ``AdamW.step`` over copies of ``params`` (gradients fixed, random)."""
    copies = [p.detach().clone().requires_grad_() for p in params]
    for c in copies:
        c.grad = torch.randn_like(c)
    opt = torch.optim.AdamW(copies, lr=1e-3, weight_decay=0.04, **{kernel: True})
    for _ in range(5):
        opt.step()
    t = time.perf_counter()
    for _ in range(calls):
        opt.step()
    return (time.perf_counter() - t) / calls * 1000


def training_step_ms(preset: str, overrides: list[str], kernel: str, steps: int) -> float:
    """Median ms of ``steps`` training steps of a fresh trainer whose AdamW uses ``kernel``."""
    optim.adamw_kernel = lambda params: {kernel: True}
    trainer = Trainer(load_config(preset, ["train.epochs=1000", *overrides]), tempfile.mkdtemp())
    batches = iter(trainer.batches(trainer.setup()))
    assert trainer.optimizer.defaults.get(kernel) is True
    times = []
    for n in range(5 + steps):
        it, micro = next(batches)
        t = time.perf_counter()
        trainer.train_step(it, micro)
        if n >= 5:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset", nargs="?", default="default")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    p.add_argument("--steps", type=int, default=60, help="timed training steps per round (default 60)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    original = optim.adamw_kernel
    trainer = Trainer(load_config(args.preset, args.overrides), tempfile.mkdtemp())
    trainer.setup()
    params = [q for g in trainer.optimizer.param_groups for q in g["params"]]  # the student's, as AdamW sees them
    print(f"{args.preset} {' '.join(args.overrides)}: {sum(q.numel() for q in params):,} parameters in "
          f"{len(params)} tensors, {torch.get_num_threads()} thread(s)")
    opt_ms = {k: [] for k in KERNELS}
    step_ms = {k: [] for k in KERNELS}
    try:
        for r in range(args.rounds):
            for k in KERNELS:
                opt_ms[k].append(optimizer_step_ms(params, k))
                step_ms[k].append(training_step_ms(args.preset, args.overrides, k, args.steps))
                print(f"round {r + 1}: {k:8s} optimizer step {opt_ms[k][-1]:6.2f} ms, training step "
                      f"{step_ms[k][-1]:7.1f} ms", flush=True)
    finally:
        optim.adamw_kernel = original
    for name, d in (("optimizer step", opt_ms), ("training step", step_ms)):
        a, b = statistics.median(d["foreach"]), statistics.median(d["fused"])
        print(f"{name}: foreach {a:.2f} ms, fused {b:.2f} ms (medians of {args.rounds} rounds), foreach / fused {a / b:.2f}x")


if __name__ == "__main__":
    main()
