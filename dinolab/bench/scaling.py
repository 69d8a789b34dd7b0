"""How the training step's time and memory grow with batch size and image size.

One DINO recipe, one precision; the points are timed interleaved in one run (with peak memory per
call). The batch sweep keeps the crop sizes; the image-size sweep scales the global crop and keeps
the local crop at the same share of it (96/224 in DINO), rounded to the patch size.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .train_step import FULL, QUICK, StepSize, build_trainer, case_info, step_flops, step_workload

FULL_BATCHES = (4, 8, 16, 32)
FULL_SIZES = (112, 160, 224)
QUICK_BATCHES = (1, 2, 4)
QUICK_SIZES = (32, 48, 64)


def local_size_for(global_size: int, base: StepSize, patch: int = 16) -> int:
    """The local crop size keeping ``base``'s local/global ratio, a multiple of ``patch`` (at least one patch)."""
    return max(patch, round(global_size * base.local_size / base.global_size / patch) * patch)


def points(base: StepSize, batches: tuple[int, ...], sizes: tuple[int, ...]) -> list[tuple[str, StepSize]]:
    """``(axis, size)`` pairs: the batch sweep at ``base``'s crops, then the image-size sweep at ``base.batch``."""
    out = [("batch", replace(base, batch=b, label=f"b{b}")) for b in batches]
    out += [("image_size", replace(base, global_size=s, local_size=local_size_for(s, base), label=f"s{s}"))
            for s in sizes]
    return out


def run(*, quick: bool = False, recipe: str = "dino", device: str = "auto", precision: str = "auto",
        repeats: int = 3, warmup: int = 1, batches: tuple[int, ...] | None = None,
        sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Seconds, images/s, FLOP/s and peak memory of a training step at each point of both sweeps."""
    from ..device import resolve_device, resolve_precision
    from .timing import interleaved

    base = QUICK if quick else FULL
    batches = batches or (QUICK_BATCHES if quick else FULL_BATCHES)
    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    pts = points(base, batches, sizes)
    trainers: dict[int, Any] = {}
    workloads, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="dinolab-bench-") as tmp:
        for axis, size in pts:
            if size.global_size not in trainers:  # one model per resolution, shared by the batch sizes
                trainers[size.global_size], _ = build_trainer(recipe, size, str(dev), prec,
                                                              Path(tmp) / f"s{size.global_size}")
            trainer = trainers[size.global_size]
            key = f"{axis}/{size.label}"
            workloads[key], _ = step_workload(trainer, size)
            rows.append({"axis": axis, **case_info(size), "flops": step_flops(trainer, size), "key": key})
        meas = interleaved(workloads, repeats=repeats, warmup=warmup, device=dev, memory=True)
    for row in rows:
        m = meas[row.pop("key")]
        row.update(m.throughput(row["batch"]), flops_per_s=row["flops"] / m.best)
    return {"benchmark": "scaling", "device": str(dev), "recipe": recipe, "precision": prec, "repeats": repeats,
            "rows": rows}


def summary(result: dict[str, Any]) -> str:
    from .report import gflops, mib, table

    rows = [{**r, "gflops": gflops(r["flops_per_s"]), "mem": mib(r["peak_bytes"]),
             "per_image": r["best_s"] / r["batch"]} for r in result["rows"]]
    cols = [("axis", "sweep", "{}"), ("batch", "batch", "{}"), ("crops", "crops", "{}"), ("best_s", "s/step", "{:.3f}"),
            ("per_image", "s/image", "{:.3f}"), ("images_per_s", "img/s", "{:.2f}"), ("gflops", "GFLOP/s", "{:.2f}"),
            ("mem", "peak MiB", "{:.0f}")]
    return "\n".join([f"scaling of the {result['recipe']} training step ({result['precision']}, "
                      f"{result['repeats']} interleaved rounds)", table(rows, cols)])
