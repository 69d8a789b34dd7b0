"""The base of every objective: :class:`StepInputs`, :class:`Objective`, the :class:`Objectives`
collection (the shared forward pass) and the registry that builds them from a config.

:class:`Objectives` runs the backbones once per step and hands the outputs to every enabled
:class:`Objective`; the loss is ``Σ weight · term``:

- the **teacher** backbone sees the global crops only (no gradient);
- the **student** backbone sees every crop, one forward per crop size
  (``forward_features_list([global, local], [global_masks, None])``);
- each objective reads the tokens it needs (CLS, patches), runs its heads and returns its term
  and monitoring statistics.

The built-in terms (one module each in this package: DINO CLS, iBOT, KoLeo, Gram anchoring,
relational distillation) are registered by ``dinolab/train/objectives/__init__.py``, each built
from its own config section; :func:`register_objective` adds a plugin, optionally with a YAML
section of its own.

Deferred state (the DINO center) is applied by :meth:`Objective.commit` only after the optimizer
step succeeded, and dropped by :meth:`Objective.discard` when a step is skipped (non-finite
values), so one bad step cannot poison the center.

Examples:
    >>> from dinolab.train.config import load_config
    >>> objectives = Objectives.from_config(load_config("default"))
    >>> [o.name for o in objectives], sorted(objectives.make_heads(64))
    (['dino', 'koleo'], ['dino_head'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import Config


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


# name -> factory(config) returning the objective, or None when the config leaves it off. Filled in
# order by this package's __init__ (the built-in terms) and by register_objective (plugins); the order
# is the order of the terms in the loss, their statistics and their checkpoint keys.
OBJECTIVES: dict[str, Callable[[Config], Objective | None]] = {}


def register_objective(name: str, factory: Callable[[Any], Objective | None], section: type | None = None) -> None:
    """Add an objective to every trainer built afterwards.

    Without ``section``, ``factory(config)`` receives the whole :class:`~dinolab.train.config.Config`
    and returns the objective or None (off). With ``section`` (a dataclass), the config gains a YAML
    section ``name`` of that schema (``load_config`` merges, validates and saves it like the built-in
    ones; ``name.key=value`` overrides work) and ``factory(section_values)`` receives only it; a
    section with a ``loss_weight`` field leaves the objective off while it is ``<= 0``.

    Examples:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class MyTermConfig:
        ...     loss_weight: float = 0.0
        ...     scale: float = 1.0
        >>> register_objective("my_term", lambda s: None, section=MyTermConfig)
        >>> from dinolab.train.config import load_config
        >>> load_config("default", ["my_term.scale=2"]).section("my_term").scale
        2.0
        >>> unregister_objective("my_term")
    """
    if section is None:
        OBJECTIVES[name] = factory
        return
    from ..config import register_section

    register_section(name, section)

    def make(config: Config) -> Objective | None:
        values = config.section(name)
        if getattr(values, "loss_weight", 1.0) <= 0:
            return None
        return factory(values)

    OBJECTIVES[name] = make


def unregister_objective(name: str) -> None:
    """Remove a plugin objective (and its config section, if it registered one)."""
    from ..config import unregister_section

    OBJECTIVES.pop(name, None)
    unregister_section(name)


class Objectives(nn.ModuleList):
    """The enabled objectives and the shared student/teacher forward pass."""

    @classmethod
    def from_config(cls, config: Config) -> Objectives:
        """The objectives of every registered factory that ``config`` turns on, in registration order."""
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
