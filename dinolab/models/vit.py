"""One Vision Transformer for DINO v1, DINOv2 and DINOv3.

The generations differ only in options:

================  =====================  =======================  ==========================
option            DINO v1                DINOv2                   DINOv3
================  =====================  =======================  ==========================
position          learned, bicubic       learned (+offset 0.1,    axial RoPE, no table
                  resize (+0.1 offset)   or antialias with regs)
registers         none                   0 or 4 (no pos-embed)    4 "storage" tokens
LayerScale        none                   yes                      yes (1e-5)
FFN               MLP                    MLP, SwiGLU for ViT-g    MLP, SwiGLU for "plus"
qkv bias          yes                    yes                      yes, K part masked to 0
LayerNorm eps     1e-6                   1e-6                     1e-5
================  =====================  =======================  ==========================

Token order is always ``[CLS, registers, patches]``. State-dict names are those of the official
DINOv2/DINOv3 code, so their checkpoints load with a plain ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import Block, PatchEmbed, RopePositionEmbedding, interpolate_pos_embed


class VisionTransformer(nn.Module):
    """A ViT backbone returning CLS, register and patch tokens.

    Args:
        img_size: training resolution; sets the size of a learned position table (any input size
            that is a multiple of ``patch_size`` works at run time).
        patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: the usual ViT shape.
        qkv_bias, proj_bias, ffn_bias: biases of the attention and FFN projections.
        ffn_layer: ``"mlp"`` or ``"swiglu"``; ``swiglu_align`` rounds the SwiGLU hidden width.
        layerscale_init: initial LayerScale value, or None for no LayerScale.
        num_register_tokens: extra learned tokens after CLS (registers / storage tokens).
        pos_embed_type: ``"learned"`` (absolute table) or ``"rope"`` (axial rotary, DINOv3).
        interpolate_offset, interpolate_antialias, pos_embed_resize: how a learned table is resized
            (see :func:`dinolab.models.layers.interpolate_pos_embed`).
        rope_base, rope_shift_coords, rope_jitter_coords, rope_rescale_coords: RoPE period base and
            training-time coordinate augmentation.
        mask_k_bias: zero the key part of the qkv bias (DINOv3).
        norm_eps: LayerNorm epsilon.
        untie_local_cls_norm: a separate final norm for the CLS/register tokens of local crops in
            training (DINOv3 7B); inference always uses ``norm``.
        drop_path_rate, drop_path_uniform, drop_path_mode: stochastic depth (linearly increasing over
            depth unless uniform).

    Examples:
        >>> m = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
        >>> out = m.forward_features(torch.randn(2, 3, 32, 48))
        >>> out["cls"].shape, out["patches"].shape
        (torch.Size([2, 64]), torch.Size([2, 24, 64]))

    ``preprocess`` (a :class:`~dinolab.models.Preprocess`) is how the model sees: set by
    :func:`dinolab.load_model` from the weights file, None for a freshly created model (then every
    consumer uses the documented defaults, 224 px and ImageNet mean / std).
    """

    preprocess: Any = None

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, ffn_layer: str = "mlp", swiglu_align: int = 8,
                 layerscale_init: float | None = None, num_register_tokens: int = 0,
                 pos_embed_type: str = "learned", interpolate_offset: float = 0.1,
                 interpolate_antialias: bool = False, pos_embed_resize: str = "official", rope_base: float = 100.0,
                 rope_shift_coords: float | None = None, rope_jitter_coords: float | None = None,
                 rope_rescale_coords: float | None = None, mask_k_bias: bool = False, norm_eps: float = 1e-6,
                 untie_local_cls_norm: bool = False, drop_path_rate: float = 0.0, drop_path_uniform: bool = False,
                 drop_path_mode: str = "auto") -> None:
        super().__init__()
        if pos_embed_type not in ("learned", "rope"):
            raise ValueError(f"pos_embed_type must be 'learned' or 'rope', got {pos_embed_type!r}")
        if pos_embed_resize not in ("official", "hf"):
            raise ValueError(f"pos_embed_resize must be 'official' or 'hf', got {pos_embed_resize!r}")
        self._config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.depth, self.num_heads = depth, num_heads
        self.num_register_tokens = num_register_tokens
        self.pos_embed_type = pos_embed_type
        self.interpolate_offset, self.interpolate_antialias = interpolate_offset, interpolate_antialias
        self.pos_embed_resize = pos_embed_resize

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim)) if pos_embed_type == "learned" else None
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.rope_embed = (RopePositionEmbedding(embed_dim // num_heads, base=rope_base, shift_coords=rope_shift_coords,
                                                 jitter_coords=rope_jitter_coords, rescale_coords=rope_rescale_coords)
                           if pos_embed_type == "rope" else None)
        rates = [drop_path_rate * (1 if drop_path_uniform else i / max(depth - 1, 1)) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_bias=proj_bias, ffn_bias=ffn_bias,
                  ffn_layer=ffn_layer, swiglu_align=swiglu_align, layerscale_init=layerscale_init, drop_path=r,
                  drop_path_mode=drop_path_mode, mask_k_bias=mask_k_bias, norm_eps=norm_eps)
            for r in rates)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.local_cls_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if untie_local_cls_norm else None
        self.init_weights()

    # ----------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments: ``VisionTransformer(**m.config)`` rebuilds the architecture."""
        return dict(self._config)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def init_weights(self) -> None:
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------------------------
    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None):
        """Patch-embed ``x`` (B, C, H, W) into ``(B, 1+R+N, D)`` tokens; returns ``(tokens, rope)``.

        Masked patches (``masks`` B×N bool) are replaced by ``mask_token`` *before* the position
        embedding is added, as in iBOT/DINOv2.
        """
        h, w = self._grid(x)
        t = self.patch_embed(x)
        if masks is not None:
            t = torch.where(masks.unsqueeze(-1), self.mask_token.to(t.dtype).unsqueeze(0), t)
        cls = self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype)
        t = torch.cat([cls, t], dim=1)
        if self.pos_embed is not None:
            pos = interpolate_pos_embed(self.pos_embed, (h, w), offset=self.interpolate_offset,
                                        antialias=self.interpolate_antialias, mode=self.pos_embed_resize)
            t = t + pos.to(t.dtype)
        if self.register_tokens is not None:
            regs = self.register_tokens.expand(t.shape[0], -1, -1).to(t.dtype)
            t = torch.cat([t[:, :1], regs, t[:, 1:]], dim=1)
        rope = self.rope_embed(h, w) if self.rope_embed is not None else None
        return t, rope

    def _split(self, x: torch.Tensor, norm: nn.Module, prefix_norm: nn.Module | None = None) -> dict[str, torch.Tensor]:
        r = self.num_register_tokens
        if prefix_norm is None:
            y = norm(x)
            prefix, patches = y[:, : 1 + r], y[:, 1 + r:]
        else:
            prefix, patches = prefix_norm(x[:, : 1 + r]), norm(x[:, 1 + r:])
        return {"cls": prefix[:, 0], "registers": prefix[:, 1:], "patches": patches}

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None,
                         local_crop: bool = False) -> dict[str, torch.Tensor | None]:
        """Run the backbone.

        Args:
            x: ``(B, 3, H, W)`` images, H and W multiples of the patch size (extra pixels are dropped).
            masks: optional ``(B, N)`` bool, True where a patch is replaced by the mask token.
            local_crop: the batch holds local crops (uses ``local_cls_norm`` in training if present).

        Returns:
            dict with ``cls`` (B, D), ``registers`` (B, R, D), ``patches`` (B, N, D), all after the final
            norm; ``prenorm`` (B, 1+R+N, D); ``masks`` as given.
        """
        t, rope = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            t = blk(t, rope=rope)
        prefix_norm = self.local_cls_norm if (local_crop and self.training and self.local_cls_norm is not None) else None
        out: dict[str, torch.Tensor | None] = dict(self._split(t, self.norm, prefix_norm))
        out["prenorm"] = t
        out["masks"] = masks
        return out

    def forward_features_list(self, xs: list[torch.Tensor], masks_list: list[torch.Tensor | None] | None = None
                              ) -> list[dict[str, torch.Tensor | None]]:
        """One backbone pass per group of equal-size crops, e.g. ``[global_crops, local_crops]``.

        Groups after the first are treated as local crops (see ``local_crop`` in :meth:`forward_features`).
        """
        masks_list = masks_list if masks_list is not None else [None] * len(xs)
        return [self.forward_features(x, m, local_crop=i > 0) for i, (x, m) in enumerate(zip(xs, masks_list))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, D)``: the final-norm CLS token (the k-NN / linear-probe feature)."""
        return self.forward_features(x)["cls"]

    def get_intermediate_layers(self, x: torch.Tensor, n: int | list[int] = 1, reshape: bool = False,
                                norm: bool = True, return_class_token: bool = False):
        """Outputs of the last ``n`` blocks (or of the blocks listed in ``n``), registers removed.

        Returns a tuple with one entry per selected block: ``(B, N, D)`` patch tokens (``(B, D, h, w)``
        with ``reshape``), or ``(patches, cls)`` pairs with ``return_class_token``. With ``norm`` the final
        LayerNorm is applied to each output, as the official code.
        """
        wanted = set(range(self.depth - n, self.depth)) if isinstance(n, int) else set(n)
        if not wanted <= set(range(self.depth)):
            raise ValueError(f"block indices {sorted(wanted)} out of range for depth {self.depth}")
        h, w = self._grid(x)
        t, rope = self.prepare_tokens(x)
        outputs = []
        for i, blk in enumerate(self.blocks):
            t = blk(t, rope=rope)
            if i in wanted:
                y = self.norm(t) if norm else t
                patches, cls = y[:, self.num_prefix_tokens:], y[:, 0]
                if reshape:
                    patches = patches.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
                outputs.append((patches, cls) if return_class_token else patches)
        return tuple(outputs)

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmaxed attention of the last block, ``(B, heads, T, T)`` with ``T = 1 + R + N``."""
        t, rope = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            t = blk(t, rope=rope)
        last = self.blocks[-1]
        return last.attn.attention_map(last.norm1(t), rope=rope)
