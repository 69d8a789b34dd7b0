"""Collapse detection from the teacher's targets.

DINO collapses in two ways (Caron et al. 2021, §5.3), both visible in the teacher targets
(:func:`dinolab.losses.collapse_stats`):

- **uniform**: every target is close to uniform; the per-sample entropy approaches ``ln K``
  (and the loss sits near ``ln K``). Usual causes: too little sharpening (teacher temperature
  too high), too strong centering.
- **one prototype**: every image picks the same prototype; the batch-mean target has
  perplexity ``exp(H(p̄))`` near 1 (``KL(p̄ ‖ uniform)`` near ``ln K``). Usual causes: no or weak
  centering, a teacher that follows the student too fast, a learning rate too high.

:class:`CollapseMonitor` raises the alarm when a signature lasts ``patience`` steps in a row,
once per episode, with advice for the case at hand: in distillation (``distillation=True``) the
teacher is frozen, so the advice is about its targets, not its momentum or centering.

Examples:
    >>> mon = CollapseMonitor(out_dim=1024, patience=2)
    >>> mon.update(entropy=6.9, kl_uniform=0.01), mon.update(entropy=6.9, kl_uniform=0.01)[:7]
    (None, 'uniform')
"""

from __future__ import annotations

import math

ADVICE = {
    "uniform": "the teacher's targets are nearly uniform (entropy {entropy:.2f} of at most ln K = {lnk:.2f}) for "
               "{n} steps: the teacher does not sharpen enough. Lower teacher.teacher_temp and "
               "teacher.warmup_teacher_temp (the embedded default uses 0.01; `python bench/bench_head.py RUN` shows "
               "how far the head's logits spread); with softmax centering on small data, Sinkhorn-Knopp targets and "
               "KoLeo help most (dino.centering=sinkhorn_knopp koleo.loss_weight=0.1, as the embedded default); "
               "or lower dino.out_dim",
    "one_prototype": "the teacher sends every image to the same few prototypes (batch perplexity {perplexity:.2f}) "
                     "for {n} steps: centering does not keep up. Raise teacher.momentum_teacher (e.g. 0.996-0.999), "
                     "lower optim.lr, or check that dino.center_momentum is 0.9",
}

# In distillation the teacher is frozen: no EMA momentum or centering speed to tune on its side; what
# helps is sharper targets, or a signal that does not go through its heads.
DISTILL_ADVICE = {
    "uniform": "the frozen teacher's targets are nearly uniform (entropy {entropy:.2f} of at most ln K = {lnk:.2f}) "
               "for {n} steps: its heads say little about these images (random heads of a released backbone, or "
               "heads trained on other data). Turn on the relational term, which uses the teacher's features "
               "rather than its heads (distill.relation_loss_weight=1), lower teacher.teacher_temp to sharpen "
               "the targets, or distil from a run directory whose heads were trained on similar images",
    "one_prototype": "the frozen teacher sends every image to the same few prototypes (batch perplexity "
                     "{perplexity:.2f}) for {n} steps: its heads do not separate these images. Use Sinkhorn-Knopp "
                     "targets (dino.centering=sinkhorn_knopp), which spread the batch over prototypes, or the "
                     "relational term (distill.relation_loss_weight=1)",
}


class CollapseMonitor:
    """Counts consecutive steps with a collapse signature; ``update`` returns a message when one is confirmed."""

    def __init__(self, out_dim: int, patience: int = 100, uniform_entropy_ratio: float = 0.95,
                 min_prototype_perplexity: float = 2.0, distillation: bool = False) -> None:
        self.lnk = math.log(out_dim)
        self.advice = DISTILL_ADVICE if distillation else ADVICE
        self.patience = patience
        self.uniform_entropy_ratio = uniform_entropy_ratio
        self.min_perplexity = min_prototype_perplexity
        self.streak: dict[str, int] = {"uniform": 0, "one_prototype": 0}
        self.warned: set[str] = set()

    def signature(self, entropy: float, kl_uniform: float) -> str | None:
        """``"uniform"``, ``"one_prototype"`` or None for one step's statistics."""
        if entropy >= self.uniform_entropy_ratio * self.lnk:
            return "uniform"
        if math.exp(max(self.lnk - kl_uniform, 0.0)) < self.min_perplexity:
            return "one_prototype"
        return None

    def update(self, entropy: float, kl_uniform: float) -> str | None:
        """Feed one step; returns the kind and advice the first time a collapse lasts ``patience`` steps."""
        kind = self.signature(entropy, kl_uniform)
        for k in self.streak:
            self.streak[k] = self.streak[k] + 1 if k == kind else 0
            if self.streak[k] == 0:
                self.warned.discard(k)  # recovered: warn again if it comes back
        if kind is None or self.streak[kind] < self.patience or kind in self.warned:
            return None
        self.warned.add(kind)
        perplexity = math.exp(max(self.lnk - kl_uniform, 0.0))
        return f"{kind} collapse: " + self.advice[kind].format(entropy=entropy, lnk=self.lnk, n=self.streak[kind],
                                                          perplexity=perplexity)
