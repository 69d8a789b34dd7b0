import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``p x p`` patches and project each to D channels.

    Shapes: ``(B, C, H, W) -> (B, (H//p)*(W//p), D)``, patches in row-major order. Remainder pixels
    beyond a multiple of ``p`` are dropped, as by a strided convolution (the DINOv3 behaviour).

    The weights are a ``Conv2d``'s (``proj.weight``: D x C x p x p, the checkpoint key of every DINO
    release), but the projection runs as one matrix product over the unfolded patches: with stride equal
    to the kernel the two are the same map, and on a CPU the product is faster than oneDNN's convolution:
    4x forward + backward on the embedded default's 32 / 16 px crops, 1.3x forward at 224 px
    (``python bench/bench_patch_embed.py``, BENCHMARKS.md).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = x[:, :, : gh * p, : gw * p].reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return F.linear(patches.reshape(b, gh * gw, c * p * p), self.proj.weight.reshape(self.proj.out_channels, -1),
                        self.proj.bias)
