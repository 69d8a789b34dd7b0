"""Cache-sized micro-batches for inference on CPU.

A ViT forward pass over a large batch streams each block's activations (the ``B·N×D`` residual
stream, the ``B·N×4D`` MLP hidden state, the ``B·H×N×N`` attention scores) through main memory
between one operation and the next. On a CPU, cutting the batch into micro-batches whose residual
stream fits in a few MiB keeps them in cache: on the 2-core development machine, ViT-S/14 at 224 px
embeds 1.3x faster in bf16 and 1.1x in fp32 at 16 / 8 images per call than at 32 (BENCHMARKS.md).
The outputs are the same up to floating-point summation order: every image is computed on its own.

GPUs want the opposite (large batches to fill the device), so there the batch is left whole.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

# Bytes of one block's residual stream (tokens × width × element size) per micro-batch on CPU.
# Measured optimum on the development CPU (AMD EPYC, 1 MiB L2 per core): 16 images of ViT-S/14
# (257 tokens × 384) in bf16, 8 in fp32, 8 of ViT-B/14 in bf16.
CPU_ACTIVATION_BUDGET = 3_200_000

T = TypeVar("T")


def micro_batch_size(model: torch.nn.Module, image_size: int | tuple[int, int], precision: str,
                     device: torch.device | str, batch_size: int) -> int:
    """Images per forward call for ``batch_size`` images of ``image_size`` px on ``device``.

    ``batch_size`` itself off CPU or for a model without ``patch_size`` / ``embed_dim``; on CPU the
    largest count whose residual stream stays under :data:`CPU_ACTIVATION_BUDGET` bytes (at least 1).

    Examples:
        >>> import dinolab
        >>> m = dinolab.create_model("dinov2_vits14")
        >>> micro_batch_size(m, 224, "bf16", "cpu", 32), micro_batch_size(m, 224, "fp32", "cpu", 32)
        (16, 8)
        >>> micro_batch_size(m, 224, "bf16", "cuda", 32)
        32
    """
    if torch.device(device).type != "cpu":
        return batch_size
    patch, width = getattr(model, "patch_size", None), getattr(model, "embed_dim", None)
    if not patch or not width:
        return batch_size
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    tokens = (h // patch) * (w // patch) + getattr(model, "num_prefix_tokens", 1)
    element = 4 if precision == "fp32" else 2
    return max(1, min(batch_size, CPU_ACTIVATION_BUDGET // (tokens * width * element)))


def micro_batch_size_for(model: torch.nn.Module, x: torch.Tensor) -> int:
    """:func:`micro_batch_size` for the images ``x`` ``(B, 3, H, W)`` as they are about to be run: their
    device, their size, and bf16 when autocast is on for that device (or ``x`` is 16-bit)."""
    low = torch.is_autocast_enabled(x.device.type) or x.dtype in (torch.bfloat16, torch.float16)
    return micro_batch_size(model, tuple(x.shape[-2:]), "bf16" if low else "fp32", x.device, len(x))


def in_micro_batches(fn: Callable[[torch.Tensor], T], x: torch.Tensor, size: int) -> T:
    """``fn(x)`` computed on slices of at most ``size`` rows of ``x`` (``(B, ...)``), outputs joined.

    The slices are as equal as possible (32 rows at ``size`` 12: 11, 11, 10). ``fn`` may return a
    tensor or nested tuples / lists / dicts of tensors whose first dimension is the batch (or None,
    in every micro-batch); they are concatenated along it.
    """
    if size >= len(x):
        return fn(x)
    parts = [fn(chunk) for chunk in torch.tensor_split(x, -(-len(x) // size))]
    return _join(parts)


def _join(parts: list):
    first = parts[0]
    if first is None:  # an optional output that no micro-batch produced (e.g. forward_features' masks)
        if any(p is not None for p in parts):
            raise TypeError("cannot join micro-batch outputs that are None in some micro-batches only")
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: _join([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_join(list(items)) for items in zip(*parts))
    raise TypeError(f"cannot join micro-batch outputs of type {type(first).__name__}")
