"""Pretraining recipe vs raw pixels: k-NN on clean and on shifted held-out digits, with run time.

Trains a config (a preset plus ``key=value`` overrides; default: the embedded default, i.e. what
``dinolab train`` runs) with the trainer, then evaluates the exported teacher the way a user would
(``load_model`` + :func:`dinolab.eval.features.embed` at the run's global crop size) with the
weighted k-NN (T = 0.07, k = 10 / 20), the train split as references and the held-out split as
queries:

- **clean**: the run's own data (``builtin:digits``: 1,438 train / 359 held out);
- **shifted**: the same split of ``builtin:digits?canvas=C`` (each 64 px digit centred on a blank
  C x C sheet: the references) against ``builtin:digits?canvas=C&shift=random`` (each held-out digit
  at a random position on the same sheet: the queries); both resized to the model's input size, so
  at C = 96 the digit fills 2/3 of the side and moves by up to 1/6 of it either way.

Each is reported for the trained model, the same architecture at its seeded random initialisation
and raw pixels (:func:`dinolab.eval.baselines.raw_pixel_knn`). Times: the wall time and the CPU time
of this process (all threads) of ``Trainer.fit`` (training plus its own k-NN evaluations); on a shared
machine the wall time depends on the other jobs, the CPU time much less.

With ``--log FILE`` a JSON line per run is appended (config, figures, times), the record of a sweep.

Examples:
  python bench/bench_recipe.py                                  # the default, ~5 min on 2 CPU cores
  python bench/bench_recipe.py default train.epochs=10 model.patch_size=4 --log recipe.jsonl
  python bench/bench_recipe.py dinov3_shapes data.source=builtin:digits crops.options.hflip_p=0.0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

from dinolab.data.datasets import ImageDataset  # noqa: E402
from dinolab.eval.baselines import raw_pixel_knn  # noqa: E402
from dinolab.eval.features import embed  # noqa: E402
from dinolab.eval.knn import knn_classify  # noqa: E402
from dinolab.models.weights import load_model  # noqa: E402
from dinolab.train.build import random_init_backbone  # noqa: E402
from dinolab.train.config import load_config  # noqa: E402
from dinolab.train.data import RunData, Subset, build_run_data  # noqa: E402
from dinolab.train.evaluation import eval_image_size  # noqa: E402
from dinolab.train.trainer import Trainer  # noqa: E402

KS = (10, 20)


def _features(e) -> dict[str, np.ndarray]:
    """The candidate k-NN features of one :class:`Embeddings`: CLS, mean patch, both (each L2-normed)."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    return {"cls": e.cls, "patch_mean": e.patch_mean, "cls+patch_mean": np.concatenate([unit(e.cls), unit(e.patch_mean)], 1)}


def knn_of(model: torch.nn.Module, memory, queries, image_size: int) -> dict[str, dict[int, float]]:
    """k-NN top-1 per feature (``cls`` is what ``dinolab knn`` uses) and per k."""
    kw = dict(image_size=image_size, progress=False, batch_size=128, patch_mean=True)
    m, q = embed(model, memory, **kw), embed(model, queries, **kw)
    fm, fq = _features(m), _features(q)
    out = {}
    for name in fm:
        res = knn_classify(torch.from_numpy(fm[name]), m.labels, torch.from_numpy(fq[name]), q.labels, k=KS)
        out[name] = {k: float(r["top1"]) for k, r in res.items()}
    return out


def shifted_split(config, data: RunData, canvas: int) -> tuple[Subset, Subset] | None:
    """(centred references, randomly placed queries) on the run's own split; None off builtin:digits."""
    source = str(config.data.source)
    if source.split("?")[0] != "builtin:digits" or "?" in source:
        return None
    centred = ImageDataset(f"builtin:digits?canvas={canvas}")
    moved = ImageDataset(f"builtin:digits?canvas={canvas}&shift=random")
    return (Subset(centred, data.train.indices, "train split, centred"),
            Subset(moved, data.val.indices, "k-NN split, shifted"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset", nargs="?", default="default")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.add_argument("--canvas", type=int, default=96, help="side of the shifted test's sheet (digits are 64 px)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: a temporary folder)")
    p.add_argument("--log", type=Path, default=None, help="append a JSON line with the figures here")
    p.add_argument("--name", default=None, help="a label for the log line")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--eval", type=Path, default=None, metavar="RUN",
                   help="evaluate this finished run directory (its config.yaml and exported teacher) without training")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.eval:
        config = load_config(str(args.eval / "config.yaml"), ["train.progress=false"])
        data = build_run_data(config)
        exported, steps, wall, cpu = args.eval / "teacher_backbone.safetensors", None, 0.0, 0.0
    else:
        config = load_config(args.preset, ["train.progress=false", *args.overrides])
        out = args.out or Path(tempfile.mkdtemp(prefix="bench_recipe_")) / "run"
        trainer = Trainer(config, out)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = trainer.fit()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if result.stopped_by:  # an interrupted run measures nothing
            sys.exit(f"stopped by {result.stopped_by} at step {result.iterations}; no figures")
        exported, steps, data = result.exported, result.iterations, trainer.data
    size = eval_image_size(config)
    model = load_model(exported)
    random_model = random_init_backbone(config)  # the trainer's random-init baseline, rebuilt
    rows = {"clean": (data.train, data.val)}
    shifted = shifted_split(config, data, args.canvas)
    if shifted is not None:
        rows[f"shifted (canvas {args.canvas})"] = shifted
    figures = {}
    for name, (memory, queries) in rows.items():
        figures[name] = {"trained": knn_of(model, memory, queries, size),
                         "random_init": knn_of(random_model, memory, queries, size),
                         "raw_pixels": raw_pixel_knn(memory, queries, size, k=KS)}
    print(f"\n{args.preset} {' '.join(args.overrides)}: {steps} steps, {size} px input, "
          f"train wall {wall:.0f} s, CPU {cpu:.0f} s ({cpu / max(wall, 1e-9):.2f} cores)")
    print(f"{'k-NN top-1 k=10 / k=20':<40} {'trained':>15} {'random init':>15} {'raw pixels':>15}")
    for name, f in figures.items():
        for feat in f["trained"]:
            cells = [f"{f[c][feat][10]:6.1%} / {f[c][feat][20]:6.1%}" for c in ("trained", "random_init")]
            cells.append(f"{f['raw_pixels'][10]:6.1%} / {f['raw_pixels'][20]:6.1%}")
            print(f"{name + ', ' + feat:<40} " + " ".join(f"{c:>15}" for c in cells))
    if args.log:
        line = {"name": args.name, "preset": args.preset, "overrides": args.overrides, "steps": steps,
                "run": str(args.eval or out), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "figures": figures}
        with open(args.log, "a") as fh:
            fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
