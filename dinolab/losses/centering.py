"""Teacher targets: softmax centering (DINO, iBOT) and Sinkhorn-Knopp (SwAV, DINOv2/v3).

Both turn raw teacher logits into target distributions. Softmax centering subtracts an EMA
``center`` of past teacher logits before a sharp softmax (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers"); Sinkhorn-Knopp instead balances the batch so every prototype
receives the same total mass (Caron et al. 2020, SwAV; used by Oquab et al. 2023, DINOv2, and
Siméoni et al. 2025, DINOv3).

Both are correct across processes: when ``torch.distributed`` is initialised, the sums over the batch
are all-reduced, so N processes holding one shard each produce exactly the targets one process would
produce on the whole batch. With no process group nothing is communicated.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(x: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce when a process group exists; identity otherwise."""
    if _distributed():
        dist.all_reduce(x, op=op)
    return x


def softmax_center(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """DINO/iBOT teacher targets ``softmax((t - c) / teacher_temp)`` over the last dim, in float32.

    Shapes: ``teacher_logits (..., K)``, ``center`` broadcastable to it (``1×K`` or ``1×1×K``) -> ``(..., K)``.
    """
    return F.softmax((teacher_logits.float() - center.float()) / teacher_temp, dim=-1)


def _global_logsumexp_over_rows(x: torch.Tensor) -> torch.Tensor:
    """``log Σ_b exp(x[b, k])`` over the rows of every process: ``(B_local, K) -> (1, K)``."""
    if x.shape[0] > 0:
        m = x.amax(dim=0, keepdim=True)
    else:  # a process may hold no rows (e.g. no masked tokens); it still joins the collectives
        m = x.new_full((1, x.shape[1]), -math.inf)
    _all_reduce(m, dist.ReduceOp.MAX)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a column of -inf logits stays -inf, not NaN
    s = _all_reduce(torch.exp(x - m).sum(dim=0, keepdim=True))
    return m + torch.log(s)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3,
                   n_samples: int | torch.Tensor | None = None) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets (SwAV; DINOv2 ``sinkhorn_knopp_teacher``), in float32.

    The reference starts from ``Q = exp(t / teacher_temp)ᵀ`` (K×B, summed over all processes), divides
    by its total, then ``n_iterations`` times divides every prototype row by its (global) sum and by K,
    and every sample column by its sum and by B; finally it multiplies by B. Every one of those
    constant factors (the total, 1/K, 1/B, B) multiplies a whole row or a whole column right before a
    normalisation of that row or column, so it cancels: the result is exactly the alternation
    "prototype masses equal, then each sample sums to 1". We run that alternation in the log domain
    on ``exp(t / T - max)`` in place when every scaled logit lies within 80 of the global maximum (always
    for weight-normalised heads, whose logits are cosines: ``t / T`` spans at most ``2 / T``), and in the
    log domain (``logsumexp`` with max-subtraction) otherwise. Both equal the reference wherever the
    reference does not overflow, and stay finite for any logits and temperature (``exp(t/0.04)``
    overflows float32 for ``t > 3.5``). The in-place path makes about half the passes over the
    ``(B, K)`` array and allocates nothing: it matters with 65,536 prototypes on every masked token.

    Distributed: each process passes its own rows; the prototype sums are all-reduced (a MAX then a
    SUM per iteration), the per-sample normalisation is local. The global sample count (B in the
    reference: the number of teacher rows, or for iBOT the number of masked tokens over all
    processes) cancels, so processes may hold different numbers of rows, including none.

    Args:
        teacher_logits: ``(B, K)`` raw teacher logits (any float dtype).
        teacher_temp: teacher temperature.
        n_iterations: Sinkhorn iterations (3 in DINOv2/v3).
        n_samples: the reference's global sample count; accepted for parity with it, not needed (see above).

    Returns:
        ``(B, K)`` float32 targets: each row sums to 1 and, over the global batch, each prototype's
        column sums to about ``B / K`` (equal shares hold exactly before the last per-sample step).
    """
    if teacher_logits.dim() != 2:
        raise ValueError(f"sinkhorn_knopp expects (B, K) logits, got shape {tuple(teacher_logits.shape)}")
    if n_iterations < 1:
        raise ValueError(f"sinkhorn_knopp needs n_iterations >= 1, got {n_iterations}")
    del n_samples  # cancels exactly; see the docstring
    # a new float32 buffer (worked on in place below), in one pass whatever the input dtype
    q = (teacher_logits / teacher_temp if teacher_logits.dtype == torch.float32
         else teacher_logits.float().div_(teacher_temp))
    top, bottom = _global_max_min(q)
    if top - bottom <= _EXP_SAFE_RANGE:
        return _sinkhorn_exp_domain(q, top, n_iterations)
    log_q = q
    for _ in range(n_iterations):
        log_q = log_q - _global_logsumexp_over_rows(log_q)  # every prototype gets the same mass
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)  # every sample sums to 1
    return torch.exp(log_q)


# exp(-80) is about 1.8e-35, above float32's smallest normal number (1.2e-38): when every scaled logit
# lies within 80 of the global maximum, exp(x - max) neither overflows nor underflows to 0.
_EXP_SAFE_RANGE = 80.0


def _global_max_min(x: torch.Tensor) -> tuple[float, float]:
    """``(max(x), min(x))`` over every process, one all-reduce (``(0, 0)`` when no process holds an element)."""
    ends = torch.stack([x.max(), -x.min()]) if x.numel() else x.new_full((2,), -math.inf)
    _all_reduce(ends, dist.ReduceOp.MAX)
    top, neg_bottom = ends.tolist()
    return (top, -neg_bottom) if math.isfinite(top) else (0.0, 0.0)


def _sinkhorn_exp_domain(q: torch.Tensor, top: float, n_iterations: int) -> torch.Tensor:
    """The reference's alternation on ``exp(q - top)`` (``top``: the global maximum), in place.

    The global maximum is one scalar for all rows and columns, so it cancels like the reference's
    other constants; the caller guarantees the range fits float32 (no overflow, no underflow to 0).
    """
    q.sub_(top).exp_()
    for _ in range(n_iterations):
        q.div_(_all_reduce(q.sum(dim=0, keepdim=True)))  # every prototype gets the same mass
        q.div_(q.sum(dim=1, keepdim=True))  # every sample sums to 1
    return q


@torch.no_grad()
def ema_center_update(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> None:
    """``center <- momentum * center + (1 - momentum) * mean(teacher_logits)``, in place, all-reduced.

    ``teacher_logits`` is ``(R, K)`` (the mean is over rows) or ``(B, N, K)`` (iBOT: the mean over
    images of each image's mean over tokens). With a process group the sum and the row count are
    all-reduced together, so the mean is over the global batch even when shards differ in size.
    With no rows at all the center is left unchanged.
    """
    t = teacher_logits.detach().float()
    if t.dim() == 3:
        t = t.mean(dim=1)
    t = t.reshape(-1, t.shape[-1])
    packed = torch.cat([t.sum(dim=0), t.new_tensor([t.shape[0]])])
    _all_reduce(packed)
    count = packed[-1]
    batch_mean = (packed[:-1] / count.clamp(min=1.0)).view_as(center)
    # no rows anywhere (e.g. no masked token in the global batch): keep the center, without a host sync
    updated = momentum * center.float() + (1.0 - momentum) * batch_mean
    center.copy_(torch.where(count > 0, updated, center.float()))


@torch.no_grad()
def collapse_stats(teacher_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cheap collapse monitors of teacher targets ``(..., K)`` (local to this process, no sync).

    Returns 0-d float32 tensors (call ``.item()`` when logging):

    - ``entropy``: mean over rows of ``-Σ_k p log p``. Near 0 = sharp targets; near ``log K`` = uniform
      targets (the "uniform" collapse).
    - ``kl_uniform``: ``KL(p̄ ‖ uniform) = log K - H(p̄)`` of the batch-mean distribution ``p̄``. Near
      ``log K`` = every row picks the same prototype (the "one dimension" collapse); near 0 = balanced.
    """
    p = teacher_probs.detach().float().reshape(-1, teacher_probs.shape[-1])
    k = p.shape[-1]
    entropy = -torch.special.xlogy(p, p).sum(dim=-1).mean()
    p_mean = p.mean(dim=0)
    kl_uniform = torch.special.xlogy(p_mean, p_mean * k).sum()
    return {"entropy": entropy, "kl_uniform": kl_uniform}
