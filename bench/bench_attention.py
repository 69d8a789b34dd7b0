"""CPU attention kernels: PyTorch's ``scaled_dot_product_attention`` vs the explicit product dinolab uses for bf16.

For ViT shapes (global 224 px crops at patch 14 / 16, 96 px local crops at patch 16), times in one
interleaved sequence: ``F.scaled_dot_product_attention`` (the CPU flash kernel) and
:func:`dinolab.models.layers.attention.attend` (explicit ``softmax(q k^T / sqrt(d)) v`` in bf16 on a CPU),
forward only and forward + backward, in fp32 and bf16, and the cosine of each bf16 output to fp32.

Example:
  python bench/bench_attention.py            # about a minute on 2 cores
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dinolab.models.layers.attention import attend  # noqa: E402

SHAPES = [(32, 6, 257, 64, "ViT-S/14 224 px, batch 32"), (32, 6, 197, 64, "ViT-S/16 224 px, batch 32"),
          (128, 6, 37, 64, "ViT-S/16 96 px local crops, batch 128")]


def _time(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of 5 calls, ms")
    print("| shape | dtype | pass | SDPA kernel | dinolab attend | speed-up | cosine to fp32 |")
    print("|---|---|---|---|---|---|---|")
    for b, h, n, d, label in SHAPES:
        g = torch.Generator().manual_seed(0)
        q32, k32, v32 = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
        ref = F.scaled_dot_product_attention(q32, k32, v32)
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (t.to(dtype) for t in (q32, k32, v32))
            with torch.inference_mode():
                sdpa = _time(lambda: F.scaled_dot_product_attention(q, k, v))
                ours = _time(lambda: attend(q, k, v))
                cos = F.cosine_similarity(attend(q, k, v).float().flatten(1), ref.flatten(1)).min()
            print(f"| {label} | {str(dtype)[6:]} | forward | {sdpa * 1e3:.1f} | {ours * 1e3:.1f} | "
                  f"{sdpa / ours:.2f}x | {float(cos):.5f} |")
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            grad = torch.randn(b, h, n, d, generator=g).to(dtype)
            sdpa = _time(lambda: F.scaled_dot_product_attention(*leaves).backward(grad))
            ours = _time(lambda: attend(*leaves).backward(grad))
            print(f"| {label} | {str(dtype)[6:]} | forward + backward | {sdpa * 1e3:.1f} | {ours * 1e3:.1f} | "
                  f"{sdpa / ours:.2f}x | - |")


if __name__ == "__main__":
    main()
