import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``p x p`` patches and project each to D channels.

    Shapes: ``(B, C, H, W) -> (B, (H//p)*(W//p), D)``, patches in row-major order. Remainder pixels
    beyond a multiple of ``p`` are dropped by the strided convolution (the DINOv3 behaviour).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)
