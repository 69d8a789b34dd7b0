"""Throughput of the batched multi-crop augmentation: images/s for 2×224 + 8×96 crops of 256×256 images.

Run: ``python bench/bench_augment.py [--batch 64] [--repeats 5] [--device cpu] [--interpolation bicubic]``.
With ``--preset NAME`` (e.g. ``default``) it times that training config's own crops instead, e.g. the embedded
default's 2×32 + 4×16 px crops of 64 px digits: ``python bench/bench_augment.py --preset default --batch 32 --size 64``.
Prints the median wall-clock rate and the CPU time per image (CPU time is steadier than wall time on a
machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout, not an installed copy
from dinolab.data.multicrop import MultiCrop  # noqa: E402
from dinolab.train.build import make_multicrop  # noqa: E402
from dinolab.train.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="side of the input images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interpolation", default="bicubic", choices=["bicubic", "bilinear", "both"])
    parser.add_argument("--preset", default=None, help="time this training config's crops (e.g. default)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device)
    sizes = torch.full((args.batch, 2), args.size, device=device)
    if args.preset:
        config = load_config(args.preset)
        crops = {config.crops.options.get("interpolation", "bicubic"): make_multicrop(config)}
        what = f"{args.preset}'s crops"
    else:
        modes = ["bicubic", "bilinear"] if args.interpolation == "both" else [args.interpolation]
        crops = {mode: MultiCrop.dino_v1(interpolation=mode) for mode in modes}
        what = "MultiCrop.dino_v1 (2×224 + 8×96 crops)"
    print(f"{what} on {args.batch} images of {args.size}×{args.size}, {device}, {torch.get_num_threads()} threads")
    for mode, mc in crops.items():
        mc(images, sizes, g)  # warm-up
        walls, cpus = [], []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            w0, c0 = time.perf_counter(), time.process_time()
            mc(images, sizes, g)
            if device.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        wall = statistics.median(walls)
        print(f"{mode:9s} {args.batch / wall:8.1f} images/s (median of {args.repeats}; best "
              f"{args.batch / min(walls):.1f}), CPU time {1000 * statistics.median(cpus) / args.batch:.1f} ms/image")


if __name__ == "__main__":
    main()
