"""Throughput of the batched multi-crop augmentation: images/s for 2×224 + 8×96 crops of 256×256 images.

Run: ``python bench/bench_augment.py [--batch 64] [--repeats 5] [--device cpu] [--interpolation bicubic]``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="side of the input images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interpolation", default="bicubic", choices=["bicubic", "bilinear", "both"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(device)
    sizes = torch.full((args.batch, 2), args.size, device=device)
    modes = ["bicubic", "bilinear"] if args.interpolation == "both" else [args.interpolation]
    print(f"MultiCrop.dino_v1 (2×224 + 8×96 crops) on {args.batch} images of {args.size}×{args.size}, "
          f"{device}, {torch.get_num_threads()} threads")
    for mode in modes:
        mc = MultiCrop.dino_v1(interpolation=mode)
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
