"""Self-supervised pretraining: :class:`Trainer` and :func:`train`.

One iteration (DINO v1 ``train_one_epoch``, in this order):

1. set lr (every group, times its multiplier) and weight decay (decayed groups) for the iteration;
2. for each of ``train.accumulate`` micro-batches: multi-crop on the device, forward of the
   teacher (global crops) and the student (all crops) under autocast, objectives, backward;
3. unscale (fp16), clip (per parameter by default), check the loss and gradients: a non-finite
   step is skipped and counted, and ``train.max_nonfinite_steps`` in a row stop the run;
4. drop the prototype gradients while the last layer is frozen, optimizer step, EMA of the
   teacher, deferred objective state (the DINO center);
5. log a line to ``metrics.jsonl``; at the end of an epoch export the teacher backbone, run the
   k-NN evaluation (labelled data) and save ``checkpoint.pt``.

Exact resume: the data order is a permutation per pass over the data drawn from
``(train.seed, pass)``, iteration ``i`` reads global batch ``i mod batches_per_pass`` of pass
``i div batches_per_pass``, and every random draw of iteration ``i`` comes from generators seeded
with ``(train.seed, i)``: crops and iBOT masks from one stream for the whole global batch, keyed on
each image's place in it, drop-path and other in-model draws per rank, ``(train.seed, i, rank)``.
Together with the saved model, optimizer, scaler and loss states, N iterations in one go and
k + resume + N - k iterations give the same numbers.

Under ``torchrun`` every rank runs this loop on its share of the global batch (see
:mod:`.distributed`); signals and stops are agreed between ranks, rank 0 writes the run directory.

SIGTERM / SIGINT finish the current iteration, save a checkpoint and stop (a second Ctrl-C aborts).

Examples:
    >>> from dinolab.train.config import load_config
    >>> cfg = load_config("default", ["train.epochs=1"])
    >>> result = train(cfg, "runs/demo")        # doctest: +SKIP
    >>> result.knn, result.knn_random_init      # doctest: +SKIP
    ({10: 0.93, 20: 0.92}, {10: 0.71, 20: 0.69})
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data import BadFileLog, ShardedSampler, make_loader
from ..data.badfiles import warnings_held_back
from ..device import autocast, resolve_precision
from ..errors import DataError, DinolabError
from ..models import VisionTransformer, create_model
from ..io import remove_partial_writes
from .checkpoint import capture_rng_state, has_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from .fsdp import SHARD_DIR, gathered_backbone, prune_shards, save_shard
from .config import Config, load_config, save_config, validate
from .crop_plan import CropPlan, CropSizes
from .data import RunData, build_run_data
from . import distributed
from .distributed import Parallel
from .distill import EXPORT_FILES as DISTILL_EXPORT_FILES
from .distill import STUDENT_EXPORT, Distillation
from .ema import EMA
from .metrics_log import MetricsLog
from .cpu_memory import keep_freed_memory
from .monitor import CollapseMonitor
from .objectives import Objectives, StepInputs
from .optim import apply_schedule, build_optimizer, clip_gradients, drop_last_layer_grads
from .pretrained import load_pretrained_backbone
from .schedules import Schedules

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
TEACHER_EXPORT = "teacher_backbone.safetensors"
_RUN_FILES = (CONFIG_NAME, METRICS_NAME, "checkpoint.pt", "checkpoint.prev.pt", TEACHER_EXPORT,
              "teacher_backbone.json", "bad_files.log", *DISTILL_EXPORT_FILES)


class TrainingDiverged(DinolabError):
    """Too many non-finite steps in a row."""


@dataclass
class TrainResult:
    """What a run produced. ``knn`` / ``knn_random_init`` / ``knn_raw_pixels``: top-1 accuracy per k (labelled
    data only)."""

    run_dir: Path
    iterations: int
    epochs: float
    loss: float | None
    knn: dict[int, float] | None
    knn_random_init: dict[int, float] | None
    stopped_by: str | None  # "SIGTERM" / "SIGINT" when interrupted, None when finished
    wall_time: float
    exported: Path | None = None  # the backbone to use: EMA teacher, or EMA student when distilling
    knn_raw_pixels: dict[int, float] | None = None  # the same k-NN on the images' [0, 1] pixels


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _say(message: str) -> None:
    from tqdm.auto import tqdm

    if distributed.world()[1] != 0:  # one voice per run
        return
    tqdm.write(message, file=sys.stderr)


class Trainer:
    """Pretrain a ViT with the objectives of ``config`` (DINO by default) and write a run directory.

    Args:
        config: the resolved :class:`~dinolab.train.config.Config` (validated here, before any work).
        run_dir: output directory (default ``runs/<timestamp>``). A new run refuses a directory that
            already holds files unless ``force``.
        resume: continue the run saved in ``run_dir`` (see :meth:`from_run`).
        force: start over in a non-empty ``run_dir`` (its run files are replaced).

    Attributes:
        on_loss: optional ``f(iteration, loss) -> loss`` applied to every micro-batch loss before
            backward (fault injection in tests, custom loss scaling).

    Examples:
        >>> trainer = Trainer(load_config("default", ["train.epochs=1"]), "runs/demo")  # doctest: +SKIP
        >>> trainer.fit().iterations                                                    # doctest: +SKIP
        22
    """

    def __init__(self, config: Config, run_dir: str | os.PathLike | None = None, *, resume: bool = False,
                 force: bool = False) -> None:
        self.config = config
        self._owns_group = distributed.init_from_env(config.train.device)  # torchrun: join its process group
        self.world_size, self.rank = distributed.world()
        self.warnings = validate(config, self.world_size)
        self.run_dir = Path(distributed.from_rank0(run_dir if run_dir is not None else default_run_dir()))
        self.resume, self.force = resume, force
        self.on_loss: Callable[[int, torch.Tensor], torch.Tensor] | None = None
        self._stop: str | None = None  # why the loop should stop after the current step
        self._ready = False
        self.distill: Distillation | None = None  # distill.teacher: frozen teacher + EMA student

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Trainer:
        """Resume the run in ``run_dir`` with its saved config (plus ``overrides``, e.g. ``train.epochs=200``)."""
        path = Path(run_dir) / CONFIG_NAME
        if not path.is_file():
            raise DinolabError(f"{run_dir} is not a run directory (no {CONFIG_NAME}); --resume takes the directory "
                               f"of an earlier `dinolab train` run")
        return cls(load_config(path, overrides), run_dir, resume=True)

    # ------------------------------------------------------------------------------------------
    # set-up

    def _prepare_run_dir(self) -> None:
        d = self.run_dir
        if self.rank != 0:
            return
        if self.resume:
            for name in _RUN_FILES:  # what a kill -9 in the middle of a write left behind
                remove_partial_writes(d / name)
            if self._config_changed():
                save_config(self.config, d / CONFIG_NAME)
            return
        if d.exists() and any(d.iterdir()):
            if not self.force:
                raise DinolabError(f"{d} already holds files; continue that run with --resume {d}, start over in it "
                                   f"with --force, or choose another --out directory")
            for name in _RUN_FILES:
                (d / name).unlink(missing_ok=True)
            shutil.rmtree(d / SHARD_DIR, ignore_errors=True)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.config, d / CONFIG_NAME)

    def _config_changed(self) -> bool:
        saved = load_config(self.run_dir / CONFIG_NAME)
        return saved.to_dict() != self.config.to_dict()

    def _arch_kwargs(self) -> dict[str, Any]:
        m = self.config.model
        kwargs: dict[str, Any] = {"img_size": self.config.crops.global_crops_size,
                                  "drop_path_rate": m.drop_path_rate, "drop_path_uniform": m.drop_path_uniform}
        for key in ("patch_size", "embed_dim", "depth", "num_heads"):
            if getattr(m, key) is not None:
                kwargs[key] = getattr(m, key)
        kwargs.update(m.options)
        return kwargs

    def build_backbone(self) -> VisionTransformer:
        """The student backbone: random (seeded by the caller) or ``model.pretrained``."""
        m = self.config.model
        if m.pretrained:
            return load_pretrained_backbone(m.pretrained, m.arch, self._arch_kwargs())
        return create_model(m.arch, **self._arch_kwargs())

    def _build_models(self) -> tuple[nn.ModuleDict, nn.ModuleDict]:
        backbone = self.build_backbone()
        teacher_backbone = VisionTransformer(**{**backbone.config, "drop_path_rate": 0.0})  # no stochastic depth
        teacher_backbone.load_state_dict(backbone.state_dict())
        heads = self.objectives.make_heads(backbone.embed_dim)
        student = nn.ModuleDict({"backbone": backbone, **heads})
        if self.config.distill.teacher is not None:  # the teacher is frozen weights, the EMA follows the student
            student = student.to(self.device).train()
            self.distill = Distillation(self.config, self.objectives, student, self.device)
            _say(self.distill.describe())
            return student, self.distill.teacher
        teacher = nn.ModuleDict({"backbone": teacher_backbone, **copy.deepcopy(heads)})
        teacher.requires_grad_(False)
        teacher.train()  # heads as in DINO v1: BatchNorm in a head normalises with the batch's statistics
        teacher["backbone"].eval()  # no stochastic depth, no RoPE jitter
        return student.to(self.device).train(), teacher.to(self.device)

    def _make_multicrop(self, sizes: CropSizes | None = None):
        """The run's MultiCrop, or one at other ``sizes`` (Gram-teacher crops, high-resolution phase)."""
        from ..data.multicrop import MultiCrop

        cr = self.config.crops
        sizes = sizes or CropSizes(cr.global_crops_size, cr.local_crops_size, None)
        return MultiCrop(global_size=sizes.global_size, global_scale=tuple(cr.global_crops_scale),
                         n_local=cr.local_crops_number, local_size=sizes.local_size,
                         local_scale=tuple(cr.local_crops_scale), gram_size=sizes.gram_size, **cr.options)

    def _num_workers(self) -> int:
        n = self.config.data.num_workers
        if n is not None:
            return n
        return 0 if str(self.config.data.source).startswith("builtin:") else min(8, os.cpu_count() or 1)

    def _setup(self) -> None:
        c = self.config
        self.device = distributed.train_device(c.train.device)  # cuda:LOCAL_RANK under torchrun
        self.precision = resolve_precision(c.train.precision, self.device)
        if self.device.type == "cpu" and c.train.keep_freed_memory:
            keep_freed_memory()  # no page faults on each step's large buffers (cpu_memory.py)
        _seed_all(c.train.seed)
        self.data: RunData = build_run_data(c)
        n = len(self.data.train)
        accumulate = c.train.accumulate
        self.micro_batch = c.train.batch_size // (self.world_size * accumulate)
        self.batches_per_pass = (n // self.world_size) // (self.micro_batch * accumulate)
        if self.batches_per_pass == 0:
            raise DataError(f"{self.data.train.source} has {n} training images, fewer than train.batch_size="
                            f"{c.train.batch_size}; lower train.batch_size (e.g. train.batch_size={max(1, n // 2)})")
        self.iters_per_epoch = c.train.epoch_length or self.batches_per_pass
        self.schedules = Schedules.from_config(c, self.iters_per_epoch)
        self.objectives = Objectives.from_config(c).to(self.device)
        self.student, self.teacher = self._build_models()
        self.parallel = Parallel(c.train.distributed, self.device)
        # the module that computes the loss: DDP / FSDP around the student (FSDP shards both models in place)
        self.step_module = self.parallel.wrap(self.student, self.objectives, self.teacher)
        self._saved_step: int | None = None  # iteration of the last checkpoint written or read
        self.objectives.setup(self.student, self.teacher, self.iters_per_epoch)  # e.g. the Gram teacher
        self.ema = self.distill.ema if self.distill is not None else EMA(self.student, self.teacher)
        self.optimizer = build_optimizer(self.student, c)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.multicrop = self._make_multicrop()
        self.crop_plan = CropPlan(c, self.iters_per_epoch)
        self.generator = torch.Generator()  # crops; reseeded every iteration
        self.sampler = ShardedSampler(n, shuffle=True, seed=c.train.seed, drop_last=True,
                                      rank=self.rank, world_size=self.world_size)
        load_size = c.data.load_size or 2 * self.crop_plan.max_global_size
        self.loader = make_loader(self.data.train, self.micro_batch, drop_last=True, num_workers=self._num_workers(),
                                  resize_mode="train", load_size=load_size, max_aspect=c.data.max_aspect,
                                  sampler=self.sampler, pin_memory=self.device.type == "cuda")
        self.bad_files = BadFileLog(c.data.max_bad_fraction, self.run_dir / "bad_files.log")
        self.eval_bad_files: dict[str, str] = {}  # unreadable files met by the k-NN evaluation (both splits)
        self.monitor = CollapseMonitor(c.dino.out_dim, c.monitor.collapse_patience, c.monitor.uniform_entropy_ratio,
                                       c.monitor.min_prototype_perplexity, distillation=bool(c.distill.teacher))
        self.metrics = MetricsLog(self.run_dir / METRICS_NAME, enabled=self.rank == 0)
        self.nonfinite_streak = 0
        self.last_knn: dict[int, float] | None = None

    # ------------------------------------------------------------------------------------------
    # state

    def state_dict(self, iteration: int) -> dict[str, Any]:
        """Everything needed to continue after ``iteration`` completed iterations (tensors and plain data only)."""
        return {
            "iteration": iteration,
            "epoch": iteration // self.iters_per_epoch,
            "student": self.student.state_dict(),
            "teacher": self.teacher.state_dict() if self.distill is None else None,  # a frozen teacher is re-read
            "distill": self.distill.state_dict() if self.distill is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "objectives": self.objectives.state_dict(),
            "rng": capture_rng_state({"multicrop": self.generator}),
            "data": {"seed": self.config.train.seed, "batches_per_pass": self.batches_per_pass,
                     "pass": iteration // self.batches_per_pass, "batch": iteration % self.batches_per_pass},
            "bad_files": [list(item) for item in self.bad_files.items],
            "nonfinite_streak": self.nonfinite_streak,
            "knn": {str(k): v for k, v in self.last_knn.items()} if self.last_knn else None,
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore a :meth:`state_dict`; returns the iteration to continue from."""
        state = distributed.restore_checkpoint(self.parallel, self.run_dir, state, self.student, self.teacher,
                                               self.optimizer)  # shards, or full tensors for a sharded model
        self._saved_step = int(state["iteration"])
        data = state.get("data", {})
        if data.get("batches_per_pass") not in (None, self.batches_per_pass):
            raise DinolabError(f"the data of {self.run_dir} changed since the checkpoint ({data['batches_per_pass']} "
                               f"batches per pass then, {self.batches_per_pass} now); resume with the same data.source "
                               f"and train.batch_size, or start a new run")
        try:
            self.student.load_state_dict(state["student"])
            if self.distill is not None:
                self.distill.load_state_dict(state.get("distill"), self.run_dir)
            elif state.get("distill"):
                raise DinolabError(f"the checkpoint in {self.run_dir} is from a distillation run but the config sets "
                                   f"no distill.teacher; resume with the run's own config.yaml")
            else:
                self.teacher.load_state_dict(state["teacher"])
            self.objectives.load_state_dict(state["objectives"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise DinolabError(f"the checkpoint in {self.run_dir} does not match the config (model or heads changed?): "
                               f"{str(e).splitlines()[0]}; resume with the run's own config.yaml") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], {"multicrop": self.generator})
        self.bad_files.add(tuple(item) for item in state.get("bad_files", []))
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        knn = state.get("knn")
        self.last_knn = {int(k): float(v) for k, v in knn.items()} if knn else None
        return int(state["iteration"])

    def save(self, iteration: int) -> None:
        """Write ``checkpoint.pt`` (rank 0; under FSDP every rank first writes its shard); all ranks return after."""
        sharded = self.parallel.sharded
        state = self.state_dict(iteration) if sharded or self.rank == 0 else None
        if sharded:
            state = save_shard(self.run_dir, iteration, state, self.student["backbone"].config)
            distributed.barrier()  # checkpoint.pt may only name a complete set of shards
        if self.rank == 0:
            save_checkpoint(self.run_dir, state)
            self._write_bad_files()
            if sharded:  # keep the shards of checkpoint.pt and checkpoint.prev.pt
                prune_shards(self.run_dir, {iteration, self._saved_step if self._saved_step is not None else iteration})
        self._saved_step = iteration
        distributed.barrier()

    def bad_file_report(self) -> BadFileLog:
        """Every unreadable file met so far, by training steps or the k-NN evaluation."""
        report = BadFileLog(log_path=self.bad_files.log_path)
        report.add(self.bad_files.items)
        report.add(self.eval_bad_files.items())
        return report

    def _write_bad_files(self) -> None:
        report = self.bad_file_report()
        if report.count and self.rank == 0:
            report.write()

    # ------------------------------------------------------------------------------------------
    # one iteration

    def _seed_iteration(self, it: int) -> None:
        s = np.random.SeedSequence([self.config.train.seed, it, self.rank]).generate_state(2)
        torch.manual_seed(int(s[0]))
        random.seed(int(s[0]))
        np.random.seed(int(s[1]))
        # crops and masks: one stream for the whole global batch (the same on every rank and micro-batch),
        # keyed on each image's position in it, so they do not depend on the number of processes
        self._data_seed = int(np.random.SeedSequence([self.config.train.seed, it, 0]).generate_state(2)[1])
        self.generator.manual_seed(self._data_seed)

    def batches(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(iteration, micro-batches)`` from iteration ``start`` on, pass after pass over the data."""
        accumulate, it = self.config.train.accumulate, start
        while True:
            data_pass, offset = divmod(it, self.batches_per_pass)
            self.sampler.set_epoch(data_pass)
            self.sampler.skip(offset * self.micro_batch * accumulate)
            share = self.sampler.shard()  # this rank's images of the pass: slot k is global-batch position
            slot = np.zeros(len(self.data.train), dtype=np.int64)  # (k mod per-rank step) x world + rank
            slot[share] = np.arange(len(share)) % (self.micro_batch * accumulate) * self.world_size + self.rank
            group: list[dict[str, Any]] = []
            for batch in self.loader:
                batch["positions"] = torch.from_numpy(slot[batch["indices"].numpy()])
                group.append(batch)
                if len(group) == accumulate:
                    yield it, group
                    group, it = [], it + 1

    def _check_bad_files(self, bad: list[tuple[str, str]], it: int) -> None:
        """``bad``: the unreadable files of iteration ``it`` on every rank (judged against the global count)."""
        self.bad_files.add(bad)
        if bad or self.bad_files.count:
            n = len(self.data.train)
            seen = min(n, (it + 1) * self.config.train.batch_size)
            try:
                self.bad_files.check(seen, total=n)
            except DataError:
                self._write_bad_files()  # the message points at the log
                raise

    def train_step(self, it: int, micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
        """Run iteration ``it`` on its micro-batches; returns the metrics record (``skipped`` set if no step)."""
        c, dev = self.config, self.device
        values = self.schedules.at(it)
        apply_schedule(self.optimizer, values["lr"], values["wd"])
        self._seed_iteration(it)
        self.optimizer.zero_grad(set_to_none=True)
        record: dict[str, Any] = {"step": it + 1, "epoch": it // self.iters_per_epoch,
                                  **{k: v for k, v in values.items() if k != "freeze_last_layer"}}
        sums: dict[str, torch.Tensor] = {}
        n_micro = n_images = 0
        run, bad = self.parallel.plan(micro_batches)  # the same micro-batches on every rank
        self._check_bad_files(bad, it)
        for m in run:
            batch = micro_batches[m]
            self.generator.manual_seed(self._data_seed)
            images = batch["images"].to(dev, non_blocking=True)
            multicrop = self.crop_plan.multicrop_at(it, self.multicrop, self._make_multicrop)
            crops = multicrop(images, batch["sizes"].to(dev), self.generator, batch["positions"], c.train.batch_size)
            local = crops.local_crops if c.crops.local_crops_number > 0 else None
            inputs = StepInputs(crops.global_crops, local, batch=len(images), n_global=2,
                                teacher_temp=values["teacher_temp"], iteration=it, gram_crops=crops.gram_crops,
                                positions=batch["positions"], batch_total=c.train.batch_size)
            with self.parallel.sync(m == run[-1]):  # gradients are reduced over ranks once, after the last
                with autocast(dev, self.precision):
                    loss, stats = self.step_module(inputs, self.generator)
                if self.on_loss is not None:
                    loss = self.on_loss(it, loss)
                    stats["loss"] = loss.detach()
                scaled = loss / c.train.accumulate
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_micro, n_images = n_micro + 1, n_images + len(images)
        if n_micro == 0:
            self.objectives.discard()
            return {**record, "skipped": "no readable image in the batch"}
        record.update(self.parallel.mean({**{k: float(v) / n_micro for k, v in sums.items()}, "images": n_images},
                                         sums=("images",)))  # averages over ranks, images summed
        record["images"] = int(record["images"])
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
        self.ema.update(values["momentum"])
        self.objectives.commit()
        return record

    # ------------------------------------------------------------------------------------------
    # evaluation and export

    def knn(self, backbone: nn.Module) -> dict[int, float]:
        """Top-1 k-NN accuracy per k of ``backbone`` (train split as memory, held-out split as queries)."""
        from ..eval.features import embed
        from ..eval.knn import knn_classify

        e = self.config.eval
        kw = dict(batch_size=e.batch_size, image_size=e.image_size or self.config.crops.global_crops_size,
                  device=self.device, precision=self.precision, num_workers=self._num_workers(), progress=False)
        with warnings_held_back():  # named in the run's bad_files.log and its final summary
            memory, queries = embed(backbone, self.data.train, **kw), embed(backbone, self.data.val, **kw)
        self.eval_bad_files.update(memory.bad + queries.bad)
        res = knn_classify(memory.cls, memory.labels, queries.cls, queries.labels, k=e.knn_k,
                           temperature=e.knn_temperature, classes=memory.classes)
        return {k: float(r["top1"]) for k, r in res.items()}

    def knn_random_init(self) -> dict[int, float]:
        """k-NN of the same architecture at its (seeded) random initialisation: the baseline to beat."""
        torch.manual_seed(self.config.train.seed)
        m = self.config.model
        model = create_model(m.arch, **{**self._arch_kwargs(), "drop_path_rate": 0.0})
        return self.knn(model.to(self.device))

    def export_teacher(self, iteration: int, backbone: nn.Module | None = None) -> Path:
        from ..models.weights import save_model

        return save_model(backbone or self.teacher["backbone"], self.run_dir / TEACHER_EXPORT, overwrite=True,
                          metadata={"iteration": iteration, "epoch": iteration // self.iters_per_epoch,
                                    "source": "dinolab train (EMA teacher backbone)"})

    def eval_backbone(self) -> nn.Module:
        """The backbone to use and evaluate: the EMA teacher, or the EMA student when distilling."""
        return self.distill.student_ema if self.distill is not None else self.teacher["backbone"]

    def export(self, iteration: int, backbone: nn.Module | None = None) -> Path:
        """Write :meth:`eval_backbone` (or ``backbone``, its gathered copy under FSDP) to the run directory
        (``teacher_backbone`` / ``student_ema_backbone``)."""
        if self.distill is not None:
            return self.distill.export(self.run_dir, iteration, iteration // self.iters_per_epoch)
        return self.export_teacher(iteration, backbone)

    def _end_of_epoch(self, done: int, last: bool) -> None:
        epoch = done // self.iters_per_epoch
        backbone = self.eval_backbone()
        if self.parallel.sharded:  # a full copy on rank 0 (every rank takes part in gathering it)
            backbone = gathered_backbone(backbone, self.device)
        if self.rank == 0:
            self.export(done, backbone)
        every = self.config.eval.knn_every
        if self.data.has_knn and self.rank == 0 and ((every > 0 and epoch % every == 0) or (last and every >= 0)):
            self.last_knn = self.knn(backbone)
            self.metrics.write({"step": done, "epoch": epoch - 1,
                                **{f"knn_top1@{k}": v for k, v in self.last_knn.items()}})
            _say(f"epoch {epoch}/{self.config.train.epochs}: k-NN top-1 "
                 + ", ".join(f"{v:.1%} (k={k})" for k, v in self.last_knn.items()))
        self.save(done)

    # ------------------------------------------------------------------------------------------
    # the loop

    def request_stop(self, reason: str = "request") -> None:
        """Finish the current step, save a checkpoint and return from :meth:`fit` (``stopped_by=reason``)."""
        self._stop = reason

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request_stop(signal.Signals(signum).name)
        _say(f"{self._stop} received: finishing the current step, then saving a checkpoint "
             f"(press Ctrl-C again to abort without saving)")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _log_step(self, record: dict[str, Any], bar: Any) -> None:
        self.metrics.write(record)
        if "skipped" in record:
            self.nonfinite_streak = self.nonfinite_streak + 1 if record["skipped"].startswith("non-finite") else 0
            _say(f"step {record['step']}: skipped ({record['skipped']}; loss {record.get('loss')}, "
                 f"{self.nonfinite_streak} in a row)")
            if self.nonfinite_streak >= self.config.train.max_nonfinite_steps:
                raise TrainingDiverged(
                    f"{self.nonfinite_streak} steps in a row had a non-finite loss or gradients, so training stopped "
                    f"at step {record['step']}; {self.run_dir / 'checkpoint.pt'} holds the last good state. Usual "
                    f"causes: fp16 overflow (use train.precision=bf16 or fp32), a learning rate too high (lower "
                    f"optim.lr), a teacher temperature too low or too high (teacher.teacher_temp 0.04-0.07). "
                    f"Raise train.max_nonfinite_steps to tolerate more")
            return
        self.nonfinite_streak = 0
        if "teacher_entropy" in record:
            alarm = self.monitor.update(record["teacher_entropy"], record["kl_uniform"])
            if alarm:
                _say(f"warning: step {record['step']}: {alarm}")
                self.metrics.write({"step": record["step"], "warning": alarm})
        bar.set_postfix(epoch=record["epoch"], loss=f"{record['loss']:.3f}",
                        img_s=f"{record['images_per_s']:.0f}", refresh=False)

    def setup(self) -> int:
        """Create (or reopen) the run directory, build data, models and optimizer; returns the first iteration."""
        if self._ready:
            return self._start
        for w in self.warnings:
            _say(f"warning: {w}")
        self._prepare_run_dir()
        self._setup()
        self._start = 0
        if self.resume and not has_checkpoint(self.run_dir):  # stopped (kill -9) before its first checkpoint
            self.metrics.truncate(0)
            _say(f"{self.run_dir} has no checkpoint yet (the run stopped before saving one): starting at step 0")
        elif self.resume:
            self._start = self.load_state_dict(load_checkpoint(self.run_dir))
            self.metrics.truncate(self._start)
            _say(f"resuming {self.run_dir} at step {self._start} (epoch {self._start // self.iters_per_epoch + 1})")
        self._ready = True
        return self._start

    def _memory_record(self) -> dict[str, Any]:
        """Peak memory of this process (``peak_mem_mb``: the largest over ranks, and each rank's)."""
        per_rank = self.parallel.per_rank(distributed.peak_memory_mb(self.device))
        return {"peak_mem_mb": round(max(per_rank), 1),
                **({"peak_mem_mb_per_rank": [round(v, 1) for v in per_rank]} if self.world_size > 1 else {})}

    def fit(self) -> TrainResult:
        """Train to ``train.epochs`` (or until a signal); returns a :class:`TrainResult`.

        Under torchrun every rank calls it; a process group it joined itself is left at the end.
        """
        try:
            return self._fit()
        finally:
            if self._owns_group:
                distributed.destroy()
                self._owns_group = False

    def _fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        start = self.setup()
        total = self.schedules.total_iters
        last_record: dict[str, Any] = {}
        old_handlers = self._install_signal_handlers()
        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                   disable=None if self.config.train.progress and self.rank == 0 else True)
        try:
            done = start
            if start < total:
                t_prev = time.perf_counter()
                for it, micro_batches in self.batches(start):
                    record = self.train_step(it, micro_batches)
                    self.objectives.end_iteration(it, self.student, self.teacher)  # e.g. Gram-teacher refresh
                    now = time.perf_counter()
                    record["step_time"] = now - t_prev
                    record["images_per_s"] = record.get("images", 0) / max(record["step_time"], 1e-9)  # global
                    record.update(self._memory_record())
                    self._log_step(record, bar)
                    if self.world_size > 1:  # a signal seen by one rank stops all of them after this step
                        code = self.parallel.any_rank(_STOPS.index(self._stop) if self._stop in _STOPS else 1)
                        self._stop = self._stop or _STOPS[code]
                    if "skipped" not in record:
                        last_record = record
                    done = it + 1
                    bar.update(1)
                    if done % self.iters_per_epoch == 0:
                        self._end_of_epoch(done, last=done >= total)
                    elif (self.config.train.checkpoint_every and done % self.config.train.checkpoint_every == 0) \
                            or self._stop is not None:
                        self.save(done)
                    if done >= total or self._stop is not None:
                        break
                    t_prev = time.perf_counter()  # evaluation and checkpoint time is not step time
        finally:
            bar.close()
            self.metrics.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        stopped = self._stop if done < total else None
        knn_random = knn_raw = None
        if stopped:
            _say(f"stopped by {stopped} at step {done}; checkpoint saved. Continue with: "
                 f"dinolab train --resume {self.run_dir}")
        elif done == start:
            _say(f"{self.run_dir} already finished its {total} steps; raise train.epochs to train longer")
        elif self.last_knn is not None and self.rank == 0:
            from ..eval.baselines import raw_pixel_knn

            knn_random = self.knn_random_init()
            e = self.config.eval
            with warnings_held_back():  # unreadable files were named by the k-NN evaluations already
                knn_raw = raw_pixel_knn(self.data.train, self.data.val, e.image_size or self.config.crops.global_crops_size,
                                        k=e.knn_k, temperature=e.knn_temperature, device=self.device)
            self.metrics.write({"step": done, **{f"knn_top1_random_init@{k}": v for k, v in knn_random.items()},
                                **{f"knn_top1_raw_pixels@{k}": v for k, v in knn_raw.items()}})
            self.metrics.close()
            k = 20 if 20 in self.last_knn else max(self.last_knn)
            _say(f"final k-NN top-1 (k={k}): {self.last_knn[k]:.1%} after pretraining vs {knn_random[k]:.1%} for the "
                 f"same architecture at random initialisation and {knn_raw[k]:.1%} on raw pixels")
        if self.rank == 0 and self.bad_file_report().count:
            _say(self.bad_file_report().summary())
        return TrainResult(run_dir=self.run_dir, iterations=done, epochs=done / self.iters_per_epoch,
                           loss=last_record.get("loss"), knn=self.last_knn, knn_random_init=knn_random,
                           knn_raw_pixels=knn_raw,
                           stopped_by=stopped, wall_time=time.perf_counter() - t_start,
                           exported=self.run_dir / (STUDENT_EXPORT if self.distill is not None else TEACHER_EXPORT))


_STOPS = (None, "request", "SIGINT", "SIGTERM")  # stop reasons, by precedence when ranks disagree


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train(config: Config, run_dir: str | os.PathLike | None = None, *, force: bool = False) -> TrainResult:
    """Pretrain with ``config`` into ``run_dir`` (see :class:`Trainer`)."""
    return Trainer(config, run_dir, force=force).fit()
