"""Distillation vs training from scratch: the same small student, the same data and number of steps.

On ``builtin:shapes`` (1,000 images; 800 train, 200 held out for k-NN queries) or, with ``--data
digits``, ``builtin:digits`` (1,797 images; 1,438 train, 359 held out; horizontal flips off), runs:

1. **teacher**: the ``dinov2_shapes`` preset (ViT/8, width 192, 6 blocks), ``--teacher-epochs`` epochs;
2. **distilled**: the ``distill_shapes`` preset (ViT/8, width 96, 4 blocks) from the teacher's run
   directory (frozen backbone and heads), ``--epochs`` epochs; the EMA student is evaluated;
   (its relational term on, ``distill.relation_loss_weight=1``);
3. **distilled, recipe only** (``--recipe-only``): the same without the relational term, i.e. the
   DINOv2 §5 recipe alone (DINO + iBOT + KoLeo against the frozen teacher's heads);
4. **distilled, backbone only**: the same from ``teacher_backbone.safetensors`` (frozen random heads);
5. **scratch**: the same student architecture trained with the ``dinov2_shapes`` recipe (EMA teacher,
   iBOT masking, drop-path 0.1) for the same number of steps; its EMA teacher is evaluated.

Steps 2-5 repeat for every seed of ``--seeds``; the summary gives each run and the mean per kind.

Each line reports the weighted k-NN top-1 (T=0.07) of the exported backbone on the held-out split
(the trainer's own end-of-run evaluation), the same architecture at random initialisation, the
parameter count and the wall time (the CPU may be shared: times are indicative only).

Examples:
  python bench/bench_distill.py                                   # about 30-60 min on 2 CPU cores
  python bench/bench_distill.py --data digits --teacher-epochs 40
  python bench/bench_distill.py --teacher runs/shapes_teacher     # reuse a dinov2_shapes run
  python bench/bench_distill.py --data digits --teacher RUN --seeds 0,1,2 --recipe-only --skip-random-heads
  python bench/bench_distill.py --teacher-epochs 2 --epochs 2     # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

from dinolab.train.config import load_config  # noqa: E402
from dinolab.train.trainer import Trainer  # noqa: E402

STUDENT = ["model.embed_dim=96", "model.depth=4", "model.num_heads=3"]  # distill_shapes' student
DATA = {"shapes": [],
        "digits": ["data.source=builtin:digits", "crops.options={hflip_p: 0.0, interpolation: bilinear}"]}


def _run(name: str, preset: str, overrides: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    trainer = Trainer(load_config(preset, overrides), out / name)
    result = trainer.fit()
    params = sum(p.numel() for p in trainer.eval_backbone().parameters())
    row = {"run": name, "preset": preset, "steps": result.iterations, "params": params,
           "knn": result.knn or {}, "random": result.knn_random_init or {}, "seconds": time.perf_counter() - t0}
    print(_line(row), flush=True)
    return row


def _line(row: dict) -> str:
    k = [f"{row['knn'].get(x, float('nan')):6.1%}" for x in (10, 20)]
    r = [f"{row['random'].get(x, float('nan')):6.1%}" for x in (10, 20)]
    return (f"{row['run']:<24} {row['params'] / 1e6:6.2f}M {row['steps']:6d}  k-NN@10 {k[0]} @20 {k[1]}   "
            f"random init @10 {r[0]} @20 {r[1]}   {row['seconds']:6.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=None, help="an existing dinov2_shapes run directory to distil from")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20, help="epochs of the distilled and scratch students")
    p.add_argument("--data", choices=sorted(DATA), default="shapes")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the students (the teacher uses the first)")
    p.add_argument("--recipe-only", action="store_true", help="also distil without the relational term")
    p.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--skip-random-heads", action="store_true", help="skip the backbone-only distillation")
    args = p.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_distill_"))
    seeds = [int(s) for s in args.seeds.split(",")]
    common = ["train.progress=false", "eval.knn_every=0", *DATA[args.data]]
    print(f"runs in {out}; builtin:{args.data}, held-out 20% k-NN queries (k=10, 20)", flush=True)
    rows = []
    teacher = args.teacher
    if teacher is None:
        rows.append(_run("teacher", "dinov2_shapes",
                         [*common, f"train.seed={seeds[0]}", f"train.epochs={args.teacher_epochs}"], out))
        teacher = out / "teacher"
    for seed in seeds:
        student = [*common, f"train.seed={seed}", f"train.epochs={args.epochs}", *STUDENT]
        suffix = f"_seed{seed}" if len(seeds) > 1 else ""
        rows.append(_run("distilled" + suffix, "distill_shapes", [*student, f"distill.teacher={teacher}"], out))
        if args.recipe_only:
            rows.append(_run("distilled_recipe_only" + suffix, "distill_shapes",
                             [*student, f"distill.teacher={teacher}", "distill.relation_loss_weight=0"], out))
        if not args.skip_random_heads:
            rows.append(_run("distilled_backbone_only" + suffix, "distill_shapes",
                             [*student, f"distill.teacher={teacher / 'teacher_backbone.safetensors'}"], out))
        rows.append(_run("scratch" + suffix, "dinov2_shapes", student, out))
    print("\nsummary (python " + " ".join(sys.argv) + ")")
    for row in rows:
        print(_line(row))
    if len(seeds) > 1:
        print("\nmean over seeds " + args.seeds)
        for kind in dict.fromkeys(r["run"].rsplit("_seed", 1)[0] for r in rows if "_seed" in r["run"]):
            group = [r for r in rows if r["run"].rsplit("_seed", 1)[0] == kind]
            mean = {k: sum(r["knn"].get(k, float("nan")) for r in group) / len(group) for k in (10, 20)}
            rand = {k: sum(r["random"].get(k, float("nan")) for r in group) / len(group) for k in (10, 20)}
            print(_line({"run": kind, "params": group[0]["params"], "steps": group[0]["steps"], "knn": mean,
                         "random": rand, "seconds": sum(r["seconds"] for r in group) / len(group)}))


if __name__ == "__main__":
    main()
