"""Analytic FLOPs of a ViT forward and of a DINO training step (matrix products only).

Conventions (those of MFU figures in the literature): a multiply-add is 2 FLOPs; only matrix
products are counted (patch-embedding convolution, linear layers, the two attention products);
norms, activations, softmax and the optimizer are not. A backward pass costs twice its forward, so
a trained module costs 3x its forward; the teacher runs forward only.

Per image with ``T = 1 + R + N`` tokens (CLS, R registers, N patches), width D, FFN width H,
``p x p`` patches of C channels, for each of the ``depth`` blocks::

    qkv     2·T·D·3D          attention  QKᵀ 2·T·T·D   and   AV 2·T·T·D
    proj    2·T·D·D           MLP        2·T·D·H·2     (SwiGLU: 2·T·D·H·3)

plus the patch embedding ``2·N·(C·p²)·D`` once.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..models.layers import swiglu_hidden_dim


def ffn_hidden_dim(config: Mapping[str, Any]) -> int:
    """Hidden width of the FFN of a :class:`~dinolab.models.VisionTransformer` config."""
    d, ratio = config["embed_dim"], config.get("mlp_ratio", 4.0)
    if config.get("ffn_layer", "mlp") == "swiglu":
        return swiglu_hidden_dim(d, ratio, config.get("swiglu_align", 8))
    return int(d * ratio)


def vit_forward_breakdown(config: Mapping[str, Any], image_hw: tuple[int, int]) -> dict[str, float]:
    """FLOPs of one image's forward pass, per kind of product (summed over blocks) and ``total``.

    Args:
        config: ``model.config`` (keys ``patch_size``, ``in_chans``, ``embed_dim``, ``depth``,
            ``mlp_ratio``, ``ffn_layer``, ``swiglu_align``, ``num_register_tokens``).
        image_hw: input height and width in pixels (the remainder past a multiple of the patch size
            is dropped, as the model does).
    """
    p, d, depth = config["patch_size"], config["embed_dim"], config["depth"]
    n = (image_hw[0] // p) * (image_hw[1] // p)
    t = 1 + config.get("num_register_tokens", 0) + n
    h = ffn_hidden_dim(config)
    ffn_mats = 3 if config.get("ffn_layer", "mlp") == "swiglu" else 2
    out = {
        "patch_embed": 2.0 * n * config.get("in_chans", 3) * p * p * d,
        "qkv": depth * 2.0 * t * d * 3 * d,
        "attn_qk": depth * 2.0 * t * t * d,
        "attn_av": depth * 2.0 * t * t * d,
        "proj": depth * 2.0 * t * d * d,
        "ffn": depth * 2.0 * t * d * h * ffn_mats,
    }
    out["total"] = sum(out.values())
    return out


def vit_forward_flops(config: Mapping[str, Any], image_hw: tuple[int, int], batch: int = 1) -> float:
    """FLOPs of a forward pass of ``batch`` images of ``image_hw`` pixels."""
    return batch * vit_forward_breakdown(config, image_hw)["total"]


def head_flops_per_row(head: nn.Module) -> float:
    """FLOPs of one input row through a projection head (its Linear and weight-normalised layers)."""
    total = 0.0
    for m in head.modules():
        if isinstance(m, nn.Linear):
            total += 2.0 * m.in_features * m.out_features
        elif hasattr(m, "weight_v"):  # WeightNormLinear: (K, bottleneck)
            total += 2.0 * m.weight_v.shape[0] * m.weight_v.shape[1]
    return total


def dino_step_flops(config: Mapping[str, Any], *, batch: int, global_size: int, n_global: int = 2,
                    local_size: int = 96, n_local: int = 0, head_row_flops: float = 0.0,
                    patch_rows: float = 0.0, patch_head_row_flops: float = 0.0) -> dict[str, float]:
    """FLOPs of one DINO training step on ``batch`` images (student trained, teacher forward only).

    The student sees ``n_global`` crops of ``global_size`` and ``n_local`` of ``local_size`` per
    image; the teacher sees the global crops. Each backbone CLS goes through a head costing
    ``head_row_flops`` (see :func:`head_flops_per_row`). With iBOT, ``patch_rows`` patch tokens per
    step (the masked ones) go through the student's and the teacher's patch head, ``patch_head_row_flops`` each.

    Returns ``student_forward``, ``teacher_forward`` and ``total = 3·student_forward + teacher_forward``.
    """
    g = vit_forward_flops(config, (global_size, global_size), batch * n_global)
    loc = vit_forward_flops(config, (local_size, local_size), batch * n_local) if n_local else 0.0
    student = g + loc + head_row_flops * batch * (n_global + n_local) + patch_head_row_flops * patch_rows
    teacher = g + head_row_flops * batch * n_global + patch_head_row_flops * patch_rows
    return {"student_forward": student, "teacher_forward": teacher, "total": 3 * student + teacher}
