"""Per-iteration schedules: learning rate, weight decay, teacher momentum and temperature.

Every schedule is a pure function of the iteration, so a resumed run needs nothing but the
iteration counter.

- :func:`~dinolab.runtime.schedules.cosine_schedule` (re-exported here): freeze, linear warm-up,
  cosine (DINO v1 ``cosine_scheduler`` / DINOv2 ``CosineScheduler``; formula in its module).
- :func:`teacher_temp_per_epoch` is DINO v1's teacher temperature (a linspace over the warm-up
  *epochs*, constant inside an epoch); :func:`teacher_temp_per_iteration` is DINOv2's (a linspace
  over the warm-up iterations).
- :func:`scaled_lr`: DINO v1 ``lr·batch/256``; DINOv2 ``lr·sqrt(batch/1024)``.

Examples:
    >>> from dinolab.train.config import load_config
    >>> s = Schedules.from_config(load_config("default"), iters_per_epoch=10)
    >>> sorted(s.at(0))
    ['freeze_last_layer', 'lr', 'momentum', 'teacher_temp', 'wd']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..runtime.schedules import cosine_schedule
from .config import Config

__all__ = ["Schedules", "cosine_schedule", "scaled_lr", "teacher_temp_per_epoch", "teacher_temp_per_iteration"]


def teacher_temp_per_epoch(epoch: int, warmup_temp: float, temp: float, warmup_epochs: int) -> float:
    """DINO v1: ``linspace(warmup_temp, temp, warmup_epochs)[epoch]`` during warm-up, then ``temp``."""
    if epoch >= warmup_epochs:
        return float(temp)
    if warmup_epochs == 1:
        return float(warmup_temp)
    return float(warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1))


def teacher_temp_per_iteration(it: int, warmup_temp: float, temp: float, warmup_iters: int) -> float:
    """DINOv2: a linspace from ``warmup_temp`` to ``temp`` over ``warmup_iters`` iterations, then ``temp``."""
    return cosine_schedule(it, temp, temp, warmup_iters, warmup_iters=warmup_iters, start_warmup_value=warmup_temp)


def scaled_lr(lr: float, batch_size: int, rule: str) -> float:
    """Peak learning rate for a total batch of ``batch_size`` images per optimizer step."""
    if rule == "linear_wrt_256":
        return lr * batch_size / 256.0
    if rule == "sqrt_wrt_1024":
        return lr * math.sqrt(batch_size / 1024.0)
    if rule == "none":
        return lr
    raise ConfigError(f"optim.scaling_rule={rule!r} is not one of linear_wrt_256, sqrt_wrt_1024, none")


@dataclass(frozen=True)
class Schedules:
    """All per-iteration values of a run, from its config and the number of iterations per epoch."""

    iters_per_epoch: int
    total_iters: int
    peak_lr: float
    min_lr: float
    warmup_iters: int
    wd: tuple[float, float]
    momentum: tuple[float, float]
    teacher_temp: tuple[float, float]
    teacher_temp_warmup_epochs: int
    teacher_temp_per_iteration: bool
    freeze_last_layer_iters: int
    constant_lr: bool = False  # after warm-up: the peak lr (DINOv3) instead of a cosine to min_lr

    @classmethod
    def from_config(cls, config: Config, iters_per_epoch: int) -> Schedules:
        o, t = config.optim, config.teacher
        return cls(
            iters_per_epoch=iters_per_epoch,
            total_iters=config.train.epochs * iters_per_epoch,
            peak_lr=scaled_lr(o.lr, config.train.batch_size, o.scaling_rule),
            min_lr=o.min_lr,
            warmup_iters=int(round(o.warmup_epochs * iters_per_epoch)),
            wd=(o.weight_decay, o.weight_decay_end),
            momentum=(t.momentum_teacher, t.final_momentum_teacher),
            teacher_temp=(t.warmup_teacher_temp, t.teacher_temp),
            teacher_temp_warmup_epochs=t.warmup_teacher_temp_epochs,
            teacher_temp_per_iteration=t.temp_schedule == "iteration",
            freeze_last_layer_iters=int(round(o.freeze_last_layer_epochs * iters_per_epoch)),
            constant_lr=o.lr_schedule == "constant",
        )

    def lr(self, it: int) -> float:
        final = self.peak_lr if self.constant_lr else self.min_lr
        return cosine_schedule(it, self.peak_lr, final, self.total_iters, self.warmup_iters)

    def weight_decay(self, it: int) -> float:
        return cosine_schedule(it, self.wd[0], self.wd[1], self.total_iters)

    def teacher_momentum(self, it: int) -> float:
        return cosine_schedule(it, self.momentum[0], self.momentum[1], self.total_iters)

    def temperature(self, it: int) -> float:
        if self.teacher_temp_per_iteration:
            return teacher_temp_per_iteration(it, *self.teacher_temp,
                                              self.teacher_temp_warmup_epochs * self.iters_per_epoch)
        return teacher_temp_per_epoch(it // self.iters_per_epoch, *self.teacher_temp, self.teacher_temp_warmup_epochs)

    def at(self, it: int) -> dict[str, float | bool]:
        """Every value for iteration ``it`` (0-based)."""
        return {"lr": self.lr(it), "wd": self.weight_decay(it), "momentum": self.teacher_momentum(it),
                "teacher_temp": self.temperature(it), "freeze_last_layer": it < self.freeze_last_layer_iters}
