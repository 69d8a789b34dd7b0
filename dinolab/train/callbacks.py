"""The work around the steps, as callbacks the loop calls: export, k-NN evaluation, checkpoint, collapse monitor.

:meth:`Callback.on_step` sees every applied step's metrics record; :meth:`Callback.on_epoch_end`
runs after each epoch's last step with an :class:`EpochEnd` (the backbone to evaluate, gathered
on rank 0 under FSDP). :func:`default_callbacks` is the list of a ``dinolab train`` run, in order:
export the backbone, k-NN, save ``checkpoint.pt``, and the collapse monitor (steps only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from .monitor import CollapseMonitor

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass
class EpochEnd:
    """``done`` completed iterations, the end of epoch ``epoch`` (1-based); ``last``: the run's final one."""

    done: int
    epoch: int
    last: bool
    backbone: nn.Module  # the teacher strategy's eval backbone (a full copy on rank 0 under FSDP)


class Callback:
    """Hooks of the training loop; both do nothing by default."""

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After a step that was applied (not skipped) and logged."""

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        """After the last step of an epoch."""


class ExportBackbone(Callback):
    """Rank 0 writes the eval backbone (``teacher_backbone`` or ``student_ema_backbone``) to the run directory."""

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        if trainer.rank == 0:
            trainer.export(end.done, end.backbone)


class KNNEvaluation(Callback):
    """k-NN top-1 of the eval backbone every ``eval.knn_every`` epochs (0: at the end only; -1: never),
    logged to ``metrics.jsonl``; the last result is ``trainer.last_knn`` (CLS, what ``dinolab knn`` uses) and
    ``trainer.last_knn_patch_mean`` (``dinolab knn --patch-mean``). Labelled data only, rank 0."""

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        every = trainer.config.eval.knn_every
        due = (every > 0 and end.epoch % every == 0) or (end.last and every >= 0)
        if not (trainer.data.has_knn and trainer.rank == 0 and due):
            return
        joined: dict[int, float] = {}
        trainer.last_knn = trainer.knn(end.backbone, patch_mean_out=joined)
        trainer.last_knn_patch_mean = joined
        trainer.metrics.write({"step": end.done, "epoch": end.epoch - 1,
                               **{f"knn_top1@{k}": v for k, v in trainer.last_knn.items()},
                               **{f"knn_top1_patch_mean@{k}": v for k, v in joined.items()}})
        trainer.say(f"epoch {end.epoch}/{trainer.config.train.epochs}: k-NN top-1 "
                    + ", ".join(f"{v:.1%} (k={k})" for k, v in trainer.last_knn.items()))


class SaveCheckpoint(Callback):
    """``checkpoint.pt`` at every epoch end (every rank takes part; rank 0 writes)."""

    def on_epoch_end(self, trainer: Trainer, end: EpochEnd) -> None:
        trainer.save(end.done)


class CollapseWarning(Callback):
    """Warns (message and ``metrics.jsonl`` line) when the teacher's targets show a collapse signature."""

    def __init__(self, monitor: CollapseMonitor) -> None:
        self.monitor = monitor

    def on_step(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "teacher_entropy" not in record:
            return
        alarm = self.monitor.update(record["teacher_entropy"], record["kl_uniform"])
        if alarm:
            trainer.say(f"warning: step {record['step']}: {alarm}")
            trainer.metrics.write({"step": record["step"], "warning": alarm})


def default_callbacks(trainer: Trainer) -> list[Callback]:
    """Export, k-NN, checkpoint and collapse monitor, configured from ``trainer.config``."""
    c = trainer.config
    monitor = CollapseMonitor(c.dino.out_dim, c.monitor.collapse_patience, c.monitor.uniform_entropy_ratio,
                              c.monitor.min_prototype_perplexity, distillation=trainer.teacher_strategy.frozen)
    return [ExportBackbone(), KNNEvaluation(), SaveCheckpoint(), CollapseWarning(monitor)]
