"""The patch embedding as one matrix product vs as oneDNN's strided convolution (the same weights).

:class:`dinolab.models.layers.patch_embed.PatchEmbed` unfolds the ``p x p`` patches and multiplies them by
the convolution's weights. This measures what that buys, in one process and one interleaved sequence
(conv, product, conv, ...), so the ratio holds on a busy machine:

- **layer**: the embedding alone under bf16 autocast, forward + backward on the embedded default's crops
  (2 x 32 px and 4 x 16 px for 32 images, patch 8, width 128), and forward only at ViT-S/16 inference
  (32 images at 224 px);
- **training step**: :meth:`Trainer.train_step` of the config (default: the embedded default), the median
  of ``--steps`` steps after 5 warm-up steps, with the layer's forward switched between the two.

Examples:
  python bench/bench_patch_embed.py --threads 2
  python bench/bench_patch_embed.py dinov2_shapes --rounds 2
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from step_timing import ab_arguments, median_step_ms, new_trainer

from dinolab.models.layers.patch_embed import PatchEmbed

PRODUCT = PatchEmbed.forward


def convolution(self: PatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """The reference: ``Conv2d`` with stride = kernel, flattened to tokens."""
    return F.conv2d(x, self.proj.weight, self.proj.bias, stride=self.patch_size).flatten(2).transpose(1, 2)


WAYS = {"convolution": convolution, "product": PRODUCT}


def layer_ms(way: str, inputs: list[torch.Tensor], layer: PatchEmbed, backward: bool, calls: int = 30) -> float:
    """Mean ms of the embedding of every tensor in ``inputs`` (bf16 autocast), with backward if asked."""
    PatchEmbed.forward = WAYS[way]

    def once() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(backward):
            y = sum(layer(x).float().sum() for x in inputs)
        if backward:
            y.backward()

    for _ in range(3):
        once()
    t = time.perf_counter()
    for _ in range(calls):
        once()
    return (time.perf_counter() - t) / calls * 1000


def training_step_ms(preset: str, overrides: list[str], way: str, steps: int) -> float:
    """Median ms of ``steps`` training steps of a fresh trainer whose patch embedding runs ``way``."""
    PatchEmbed.forward = WAYS[way]
    return median_step_ms(new_trainer(preset, overrides), steps)


def main() -> None:
    args = ab_arguments(__doc__.splitlines()[0], steps=40)
    torch.manual_seed(0)
    cases = {
        "default crops, fwd+bwd": (PatchEmbed(8, 3, 128), [torch.randn(64, 3, 32, 32), torch.randn(128, 3, 16, 16)], True),
        "ViT-S/16 224 px, fwd": (PatchEmbed(16, 3, 384), [torch.randn(32, 3, 224, 224)], False),
    }
    print(f"{torch.get_num_threads()} thread(s); training step: {args.preset} {' '.join(args.overrides)}")
    results: dict[str, dict[str, list[float]]] = {name: {w: [] for w in WAYS} for name in [*cases, "training step"]}
    try:
        for r in range(args.rounds):
            for way in WAYS:
                for name, (layer, inputs, backward) in cases.items():
                    results[name][way].append(layer_ms(way, inputs, layer, backward))
                results["training step"][way].append(training_step_ms(args.preset, args.overrides, way, args.steps))
                print(f"round {r + 1} {way:11s} " + ", ".join(f"{n} {results[n][way][-1]:.2f} ms" for n in results),
                      flush=True)
    finally:
        PatchEmbed.forward = PRODUCT
    for name, d in results.items():
        a, b = statistics.median(d["convolution"]), statistics.median(d["product"])
        print(f"{name}: convolution {a:.2f} ms, product {b:.2f} ms (medians of {args.rounds} rounds), "
              f"convolution / product {a / b:.2f}x")


if __name__ == "__main__":
    main()
