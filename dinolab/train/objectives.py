"""A method is a configuration of objectives: the shared forward pass and the loss terms.

:class:`Objectives` runs the backbones once per step and hands the outputs to every enabled
:class:`Objective`; the loss is ``Σ weight · term``:

- the **teacher** backbone sees the global crops only (no gradient);
- the **student** backbone sees every crop, one forward per crop size
  (``forward_features_list([global, local], [global_masks, None])``);
- each objective reads the tokens it needs (CLS, patches), runs its heads and returns its term
  and monitoring statistics.

Only the DINO objective (CLS self-distillation, Caron et al. 2021) is built in here. The
DINOv2/v3 terms plug in the same way, as a class and one line in :data:`OBJECTIVES`:

- iBOT: ``prepare`` draws ``StepInputs.global_masks`` (the student's global crops are masked),
  ``forward`` reads ``student_global["patches"]`` / ``teacher_global["patches"]`` and declares an
  ``ibot_head`` (or reuses ``dino_head``) through ``make_heads``;
- KoLeo: ``forward`` reads ``student_global["cls"]`` (backbone CLS, before the head);
- Gram (:mod:`.gram`): ``setup`` builds a frozen Gram teacher (saved with the objectives' state),
  ``forward`` runs it on ``StepInputs.gram_crops``, ``end_iteration`` refreshes it from the EMA teacher;
- distillation: the trainer's teacher is a frozen pretrained model instead of the EMA; the
  relational term (:mod:`.relation_distill`) reads its CLS tokens like any other teacher output.

Deferred state (the DINO center) is applied by :meth:`Objective.commit` only after the optimizer
step succeeded, and dropped by :meth:`Objective.discard` when a step is skipped (non-finite
values), so one bad step cannot poison the center.

Examples:
    >>> from dinolab.train.config import load_config
    >>> objectives = Objectives.from_config(load_config("default"))
    >>> [o.name for o in objectives], sorted(objectives.make_heads(64))
    (['dino'], ['dino_head'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..losses import DINOLoss, collapse_stats
from ..models import DINOHead
from .config import Config


@dataclass
class StepInputs:
    """The crops of one (micro-)batch of ``B`` images and the step's scheduled values.

    ``global_crops`` is ``(G·B, 3, S, S)`` crop-major (crop 0 of every image, then crop 1, ...);
    ``local_crops`` is ``(L·B, 3, s, s)`` or None.
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor | None
    batch: int
    n_global: int
    teacher_temp: float
    iteration: int
    global_masks: torch.Tensor | None = None  # (G·B, N) bool, for masked-image objectives (iBOT)
    # (B,) positions of these images in the step's global batch of batch_total images (all processes and
    # micro-batches): per-image draws keyed on them do not depend on how the batch is split
    positions: torch.Tensor | None = None
    batch_total: int | None = None
    gram_crops: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Forward:
    """Backbone outputs shared by the objectives (dicts of :meth:`VisionTransformer.forward_features`)."""

    student_global: dict[str, Any]
    student_local: dict[str, Any] | None
    teacher_global: dict[str, Any] | None

    def student_cls(self) -> torch.Tensor:
        """``(V·B, D)`` student CLS tokens of every view, global views first."""
        parts = [self.student_global["cls"]] + ([self.student_local["cls"]] if self.student_local else [])
        return torch.cat(parts)


class Objective(nn.Module):
    """One weighted term of the training loss. Subclasses set ``name`` and implement ``forward``."""

    name = "objective"
    uses_teacher = True

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def make_heads(self, embed_dim: int) -> dict[str, nn.Module]:
        """Student heads this objective trains (the teacher gets copies)."""
        return {}

    def prepare(self, inputs: StepInputs, generator: torch.Generator | None) -> None:
        """Add what the forward needs to ``inputs`` (e.g. masks) before the backbones run."""

    def forward(self, student: nn.ModuleDict, teacher: nn.ModuleDict, out: Forward,
                inputs: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the (unweighted) scalar term and detached statistics to log."""
        raise NotImplementedError

    def commit(self) -> None:
        """Apply state updates deferred during ``forward`` (the optimizer step succeeded)."""

    def discard(self) -> None:
        """Drop deferred state updates (the step was skipped)."""

    def setup(self, student: nn.ModuleDict, teacher: nn.ModuleDict, iters_per_epoch: int) -> None:
        """Called once the models exist and before a checkpoint is restored (e.g. to build a frozen copy)."""

    def end_iteration(self, iteration: int, student: nn.ModuleDict, teacher: nn.ModuleDict) -> None:
        """Called after iteration ``iteration`` (0-based) whether or not its step was applied: scheduled events."""


class CenteredObjective(Objective):
    """An objective whose ``self.loss`` keeps a softmax center: the teacher logits appended to
    ``self._pending`` during ``forward`` update it in :meth:`commit` (dropped by :meth:`discard`)."""

    loss: Any

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self._pending: list[torch.Tensor] = []

    def commit(self) -> None:
        if self._pending and self.loss.centering == "softmax":
            self.loss.update_center(torch.cat(self._pending))
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()


class DINOObjective(CenteredObjective):
    """DINO CLS self-distillation: cross-entropy between teacher targets and student views.

    The teacher's global-view CLS tokens go through the teacher ``dino_head``; its targets are
    centred and sharpened (softmax centering or Sinkhorn-Knopp, :class:`dinolab.losses.DINOLoss`).
    The student's CLS tokens of every view go through the student ``dino_head`` in one call. The
    loss averages every (teacher view, student view) pair except the same-view ones. The center is
    updated once per optimizer step, from the teacher logits of all its micro-batches.

    Statistics: ``dino_loss``, ``teacher_entropy`` and ``kl_uniform`` (collapse monitors).
    """

    name = "dino"

    def __init__(self, config: Config) -> None:
        d = config.dino
        super().__init__(d.loss_weight)
        self.cfg = d
        self.loss = DINOLoss(d.out_dim, student_temp=d.student_temp, center_momentum=d.center_momentum,
                             centering=d.centering)

    def make_heads(self, embed_dim: int) -> dict[str, nn.Module]:
        d = self.cfg
        return {"dino_head": DINOHead(embed_dim, d.out_dim, hidden_dim=d.head_hidden_dim,
                                      bottleneck_dim=d.head_bottleneck_dim, nlayers=d.head_nlayers,
                                      use_bn=d.use_bn_in_head, norm_last_layer=d.norm_last_layer,
                                      weight_norm=d.head_weight_norm)}

    def forward(self, student, teacher, out, inputs):
        with torch.no_grad():
            teacher_logits = teacher["dino_head"](out.teacher_global["cls"]).float()  # (G·B, K)
            targets = self.loss.teacher_targets(teacher_logits, inputs.teacher_temp)  # (G, B, K)
        student_logits = student["dino_head"](out.student_cls())  # (V·B, K)
        loss = self.loss.cross_entropy(student_logits, targets)
        self._pending.append(teacher_logits)
        stats = collapse_stats(targets)
        return loss, {"dino_loss": loss.detach(), "teacher_entropy": stats["entropy"],
                      "kl_uniform": stats["kl_uniform"]}


# name -> factory(config) returning the objective, or None when the config leaves it off
OBJECTIVES: dict[str, Callable[[Config], Objective | None]] = {
    "dino": lambda c: DINOObjective(c) if c.dino.loss_weight > 0 else None,
}


def _weighted(section: str, module: str, cls: str) -> Callable[[Config], Objective | None]:
    """Factory of an objective in ``dinolab.train.<module>``, enabled by ``<section>.loss_weight > 0``."""

    def make(config: Config) -> Objective | None:
        if getattr(config, section).loss_weight <= 0:
            return None
        import importlib  # the objective modules import this one

        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(config)

    return make


def _relation_distill(config: Config) -> Objective | None:
    if config.distill.teacher is None or config.distill.relation_loss_weight <= 0:
        return None
    from .relation_distill import RelationDistillObjective

    return RelationDistillObjective(config)


OBJECTIVES.update(ibot=_weighted("ibot", "ibot", "iBOTObjective"), koleo=_weighted("koleo", "koleo", "KoLeoObjective"),
                  gram=_weighted("gram", "gram", "GramObjective"), relation=_relation_distill)


def register_objective(name: str, factory: Callable[[Config], Objective | None]) -> None:
    """Add an objective to every trainer built afterwards (``factory(config)`` returns it or None)."""
    OBJECTIVES[name] = factory


class Objectives(nn.ModuleList):
    """The enabled objectives and the shared student/teacher forward pass."""

    @classmethod
    def from_config(cls, config: Config) -> Objectives:
        return cls([o for o in (make(config) for make in OBJECTIVES.values()) if o is not None])

    def make_heads(self, embed_dim: int) -> dict[str, nn.Module]:
        heads: dict[str, nn.Module] = {}
        for objective in self:
            heads.update(objective.make_heads(embed_dim))
        return heads

    def forward(self, student: nn.ModuleDict, teacher: nn.ModuleDict, inputs: StepInputs,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss ``Σ weight·term`` and the statistics of every term (plus ``loss``)."""
        for objective in self:
            objective.prepare(inputs, generator)
        teacher_out = None
        if any(o.uses_teacher for o in self):
            with torch.no_grad():
                teacher_out = teacher["backbone"].forward_features(inputs.global_crops)
        crops = [inputs.global_crops] + ([inputs.local_crops] if inputs.local_crops is not None else [])
        masks = [inputs.global_masks] + [None] * (len(crops) - 1)
        student_out = student["backbone"].forward_features_list(crops, masks)
        out = Forward(student_out[0], student_out[1] if len(student_out) > 1 else None, teacher_out)
        total = torch.zeros((), device=inputs.global_crops.device)
        stats: dict[str, torch.Tensor] = {}
        for objective in self:
            term, term_stats = objective(student, teacher, out, inputs)
            total = total + objective.weight * term.float()
            stats.update(term_stats)
        stats["loss"] = total.detach()
        return total, stats

    def setup(self, student: nn.ModuleDict, teacher: nn.ModuleDict, iters_per_epoch: int) -> None:
        for objective in self:
            objective.setup(student, teacher, iters_per_epoch)

    def end_iteration(self, iteration: int, student: nn.ModuleDict, teacher: nn.ModuleDict) -> None:
        for objective in self:
            objective.end_iteration(iteration, student, teacher)

    def commit(self) -> None:
        for objective in self:
            objective.commit()

    def discard(self) -> None:
        for objective in self:
            objective.discard()
