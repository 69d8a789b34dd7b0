"""Benchmark this machine: embedding vs transformers, training step (MFU, memory), augmentation, scaling.

WHAT is embed, train, augment, scaling, runtime or all (default; all leaves out runtime, which needs
the onnx extra). runtime: dinolab's PyTorch CPU path (fp32, bf16) against ONNX Runtime fp32 / int8 on
the same exported models (--models, default dinov2_vits14,dinov2_vitb14; --batch default 8).
Each benchmark times its workloads in one interleaved sequence (A B B A ...), with the matrix-multiply
peaks in the same sequence, so ratios and MFU hold even on a busy machine. bf16 is measured too; where it
would take too long (a CPU without native bf16 instructions emulates it) it runs at a reduced size, or is
skipped, and says so.
--quick runs tiny models and sizes (a check that everything works, in a few minutes on a CPU).
Examples:
  dinolab bench --quick
  dinolab bench embed --precisions fp32,bf16 --out embed.json
  dinolab bench train --device cuda --out train.json
  dinolab bench runtime --out runtime.json
"""

from __future__ import annotations

import argparse

WHAT = ("embed", "train", "augment", "scaling", "runtime", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all", choices=WHAT, metavar="WHAT",
                        help="embed, train, augment, scaling, runtime or all (default)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precisions", default="fp32,bf16", metavar="P,P",
                        help="comma-separated precisions to measure (default fp32,bf16; auto allowed)")
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes: checks the suite quickly")
    parser.add_argument("--repeats", type=int, default=3, metavar="N", help="timed calls per workload (default 3)")
    parser.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed calls per workload (default 1)")
    parser.add_argument("--models", default=None, metavar="NAME,NAME",
                        help="embed, runtime: architectures (default dinov2_vits14,dinov2_vitb14)")
    parser.add_argument("--recipes", default="dino,dinov2", metavar="R,R", help="train: recipes (default dino,dinov2)")
    parser.add_argument("--batch", type=int, default=None, metavar="B",
                        help="images per batch / step (default: 32 for embed, 16 for train; 4 and 2 with --quick)")
    parser.add_argument("--budget", type=float, default=None, metavar="S",
                        help="longest predicted seconds per call before a workload is shrunk or skipped "
                             "(default 30 for embed, 120 for train; 5 and 20 with --quick)")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="also write every figure as JSON")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import replace

    from ..bench import embed, scaling, train_step
    from ..bench.report import machine_info, machine_line
    from ..device import resolve_device
    from ..errors import ConfigError
    from ..io import atomic_save_text, check_writable

    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError(f"--repeats must be >= 1 and --warmup >= 0 (got {args.repeats}, {args.warmup})")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    out = check_writable(args.out, force=args.force) if args.out else None
    dev = resolve_device(args.device)
    precisions = _names(args.precisions)
    if not precisions:
        raise ConfigError("--precisions is empty; give e.g. --precisions fp32,bf16")
    timing = dict(repeats=args.repeats, warmup=args.warmup)
    info = machine_info(dev)
    print(f"machine: {machine_line(info)}", flush=True)
    report: dict = {"machine": info, "argv": sys.argv[1:], "quick": args.quick}

    if args.what in ("embed", "all"):
        size = embed.QUICK if args.quick else embed.FULL
        size = replace(size, batch=args.batch) if args.batch else size
        models = _names(args.models) if args.models else embed.MODELS[:1] if args.quick else embed.MODELS
        budget = args.budget or (5.0 if args.quick else 30.0)
        report["embed"] = embed.run(models, size=size, device=str(dev), precisions=precisions, budget_s=budget, **timing)
        print("\n" + embed.summary(report["embed"]), flush=True)
    if args.what in ("train", "augment", "all"):
        size = train_step.QUICK if args.quick else train_step.FULL
        size = replace(size, batch=args.batch) if args.batch else size
        budget = args.budget or (20.0 if args.quick else 120.0)
        recipes = _names(args.recipes) if args.what != "augment" else _names(args.recipes)[:1]
        precs = precisions if args.what != "augment" else ("auto",)
        fallback = None if args.quick else train_step.QUICK
        report["train"] = train_step.run(recipes, size=size, fallback=fallback, device=str(dev), precisions=precs,
                                         budget_s=budget, **timing)
        print("\n" + train_step.summary(report["train"]), flush=True)
    if args.what in ("scaling", "all"):
        report["scaling"] = scaling.run(quick=args.quick, device=str(dev), **timing)
        print("\n" + scaling.summary(report["scaling"]), flush=True)
    if args.what == "runtime":
        from ..bench import runtime

        size = runtime.QUICK if args.quick else runtime.FULL
        size = replace(size, batch=args.batch) if args.batch else size
        models = _names(args.models) if args.models else runtime.MODELS[:1] if args.quick else runtime.MODELS
        report["runtime"] = runtime.run(models, size=size, **timing)
        print("\n" + runtime.summary(report["runtime"]), flush=True)
    report["machine"]["load_average_end"] = machine_info(dev)["load_average"]
    if out is not None:
        atomic_save_text(out, json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {out}")
    return 0
