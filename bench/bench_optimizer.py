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

import statistics
import time

import torch
from step_timing import ab_arguments, median_step_ms, new_trainer

import dinolab.train.optim as optim

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
    trainer = new_trainer(preset, overrides)
    ms = median_step_ms(trainer, steps)
    assert trainer.optimizer.defaults.get(kernel) is True
    return ms


def main() -> None:
    args = ab_arguments(__doc__.splitlines()[0], steps=60)
    original = optim.adamw_kernel
    trainer = new_trainer(args.preset, args.overrides)
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
