"""CPU inference speed against micro-batch size: why ``dinolab.embed`` splits its batches.

Times one batch of images through ``get_intermediate_layers`` (what :func:`dinolab.embed` runs) when
the batch goes through the model whole and in micro-batches of 16, 8, 4 and 2 images, in fp32 and
bf16 (autocast), all sizes interleaved in one sequence; and prints the size that
:func:`dinolab.eval.microbatch.micro_batch_size` picks. Random weights (speed does not depend on them).

Example:
  python bench/bench_microbatch.py                        # ViT-S/14 and ViT-B/14, batch 32, ~6 minutes
  python bench/bench_microbatch.py --models dinov2_vits14 --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

import torch  # noqa: E402

import dinolab  # noqa: E402
from dinolab.bench.timing import interleaved  # noqa: E402
from dinolab.device import autocast  # noqa: E402
from dinolab.eval.microbatch import in_micro_batches, micro_batch_size  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dinov2_vits14", "dinov2_vitb14"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 8, 4, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    sizes = [args.batch] + [s for s in args.sizes if s < args.batch]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, {args.image_size} px; "
          f"images/s from the best of {args.repeats} interleaved calls")
    print("| model | precision | " + " | ".join("whole batch" if s == args.batch else f"{s}" for s in sizes)
          + " | picked |")
    print("|---|---|" + "---|" * (len(sizes) + 1))
    for name in args.models:
        torch.manual_seed(0)
        model = dinolab.create_model(name).eval()
        for precision in ("fp32", "bf16"):
            def run(size: int, precision: str = precision):
                def fn():
                    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
                        in_micro_batches(lambda c: model.get_intermediate_layers(c, 1, return_class_token=True),
                                         x, size)
                return fn
            meas = interleaved({str(s): run(s) for s in sizes}, repeats=args.repeats, warmup=1)
            rates = [args.batch / min(meas[str(s)].seconds) for s in sizes]
            picked = micro_batch_size(model, args.image_size, precision, "cpu", args.batch)
            print(f"| {name} | {precision} | " + " | ".join(f"{r:.2f}" for r in rates) + f" | {picked} |", flush=True)


if __name__ == "__main__":
    main()
