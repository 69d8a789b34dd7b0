"""Temperature scaling (Guo et al. 2017): one scalar ``T`` so that ``softmax(z / T)`` is calibrated.

``T`` minimises the negative log-likelihood of held-out labels; it is fitted on ``log T`` (so ``T``
stays positive) with L-BFGS, in float64. Dividing by ``T`` never changes the predicted class.

Examples:
    >>> import torch
    >>> z = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    >>> y = torch.tensor([0, 1, 1, 0])        # over-confident: one of the three "class 0" is wrong
    >>> t = fit_temperature(z, y)
    >>> t > 1, nll(z, y, t) < nll(z, y, 1.0)
    (True, True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_T, MAX_T = 1e-2, 1e2


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` (N,) under ``softmax(logits / T)`` (N, C)."""
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The ``T`` in ``[0.01, 100]`` minimising :func:`nll` of ``(N, C)`` logits; 1.0 for an empty set."""
    if len(labels) == 0:
        return 1.0
    z, y = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t):
        return 1.0
    return min(max(t, MIN_T), MAX_T)
