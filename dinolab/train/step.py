"""One training iteration (DINO v1 ``train_one_epoch``, in this order):

1. set lr (every group, times its multiplier) and weight decay (decayed groups) for the iteration;
2. for each of ``train.accumulate`` micro-batches: multi-crop on the device, forward of the
   teacher (global crops) and the student (all crops) under autocast, objectives, backward;
3. unscale (fp16), clip (per parameter by default), check the loss and gradients: a non-finite
   step is skipped (``record["skipped"]``) and the objectives' deferred state dropped;
4. drop the prototype gradients while the last layer is frozen, optimizer step, teacher update
   (EMA), deferred objective state (the DINO center).

Every random draw of iteration ``i`` comes from generators seeded with ``(train.seed, i)``: crops and
iBOT masks from one stream for the whole global batch, keyed on each image's place in it;
drop-path and other in-model draws per rank, ``(train.seed, i, rank)``.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..device import autocast
from ..runtime.distributed import Parallel
from .config import Config
from .crop_plan import CropPlan, CropSizes
from .data_plan import DataPlan
from .objectives import Objectives, StepInputs
from .optim import apply_schedule, clip_gradients, drop_last_layer_grads
from .schedules import Schedules
from .teacher import TeacherStrategy

LossHook = Callable[[int, torch.Tensor], torch.Tensor]


class StepRunner:
    """Runs iteration ``it`` on its micro-batches: :meth:`run` returns the metrics record.

    ``multicrop`` is the run's own :class:`~dinolab.data.MultiCrop`; ``make_multicrop(sizes)`` builds
    the ones of other crop sizes (Gram-teacher crops, high-resolution phase), chosen per iteration by
    ``crop_plan``. ``generator`` is the crop/mask stream (reseeded every iteration; its state is saved).
    """

    def __init__(self, config: Config, *, device: torch.device, precision: str, rank: int, schedules: Schedules,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, parallel: Parallel,
                 step_module: nn.Module, objectives: Objectives, teacher: TeacherStrategy, data: DataPlan,
                 crop_plan: CropPlan, multicrop: Any, make_multicrop: Callable[[CropSizes], Any]) -> None:
        self.config, self.device, self.precision, self.rank = config, device, precision, rank
        self.schedules, self.optimizer, self.scaler, self.parallel = schedules, optimizer, scaler, parallel
        self.step_module, self.objectives, self.teacher, self.data = step_module, objectives, teacher, data
        self.crop_plan, self.multicrop, self.make_multicrop = crop_plan, multicrop, make_multicrop
        self.generator = torch.Generator()
        self._data_seed = 0

    def seed_iteration(self, it: int) -> None:
        s = np.random.SeedSequence([self.config.train.seed, it, self.rank]).generate_state(2)
        torch.manual_seed(int(s[0]))
        random.seed(int(s[0]))
        np.random.seed(int(s[1]))
        # crops and masks: one stream for the whole global batch (the same on every rank and micro-batch),
        # keyed on each image's position in it, so they do not depend on the number of processes
        self._data_seed = int(np.random.SeedSequence([self.config.train.seed, it, 0]).generate_state(2)[1])
        self.generator.manual_seed(self._data_seed)

    def run(self, it: int, micro_batches: list[dict[str, Any]], on_loss: LossHook | None = None) -> dict[str, Any]:
        """Iteration ``it``; ``on_loss(it, loss)`` may replace each micro-batch loss before backward."""
        values = self.schedules.at(it)
        apply_schedule(self.optimizer, values["lr"], values["wd"])
        self.seed_iteration(it)
        self.optimizer.zero_grad(set_to_none=True)
        record: dict[str, Any] = {"step": it + 1, "epoch": it // self.schedules.iters_per_epoch,
                                  **{k: v for k, v in values.items() if k != "freeze_last_layer"}}
        run, bad = self.parallel.plan(micro_batches)  # the same micro-batches on every rank
        self.data.check_bad_files(bad, it)
        sums: dict[str, torch.Tensor] = {}
        n_images = 0
        for m in run:
            stats, n = self._micro_batch(it, micro_batches[m], values["teacher_temp"], m == run[-1], on_loss)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_images += n
        if not run:
            self.objectives.discard()
            return {**record, "skipped": "no readable image in the batch"}
        record.update(self.parallel.mean({**{k: float(v) / len(run) for k, v in sums.items()}, "images": n_images},
                                         sums=("images",)))  # averages over ranks, images summed
        record["images"] = int(record["images"])
        return self._apply(record, values)

    def _micro_batch(self, it: int, batch: dict[str, Any], teacher_temp: float, last: bool,
                     on_loss: LossHook | None) -> tuple[dict[str, torch.Tensor], int]:
        """Crops, forward and backward of one micro-batch; returns its statistics and image count."""
        c, dev = self.config, self.device
        self.generator.manual_seed(self._data_seed)
        images = batch["images"].to(dev, non_blocking=True)
        multicrop = self.crop_plan.multicrop_at(it, self.multicrop, self.make_multicrop)
        crops = multicrop(images, batch["sizes"].to(dev), self.generator, batch["positions"], c.train.batch_size)
        local = crops.local_crops if c.crops.local_crops_number > 0 else None
        inputs = StepInputs(crops.global_crops, local, batch=len(images), n_global=2, teacher_temp=teacher_temp,
                            iteration=it, gram_crops=crops.gram_crops, positions=batch["positions"],
                            batch_total=c.train.batch_size)
        with self.parallel.sync(last):  # gradients are reduced over ranks once, after the last
            with autocast(dev, self.precision):
                loss, stats = self.step_module(inputs, self.generator)
            if on_loss is not None:
                loss = on_loss(it, loss)
                stats["loss"] = loss.detach()
            scaled = loss / c.train.accumulate
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        return stats, len(images)

    def _apply(self, record: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """Clip, check, step the optimizer and update the teacher, or skip a non-finite step."""
        c = self.config
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(clip_gradients(params, c.optim.clip_grad, c.optim.clip_mode))
        record["grad_norm"] = grad_norm
        if not (math.isfinite(record["loss"]) and math.isfinite(grad_norm)):
            if self.scaler is not None:
                self.scaler.update()  # lowers the fp16 loss scale
            self.optimizer.zero_grad(set_to_none=True)
            self.objectives.discard()
            kind = "non-finite loss" if not math.isfinite(record["loss"]) else "non-finite gradients"
            return {**record, "skipped": kind}
        if values["freeze_last_layer"]:
            drop_last_layer_grads(self.optimizer)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.teacher.update(values["momentum"])
        self.objectives.commit()
        return record
