"""Self-supervised pretraining: :class:`Trainer` (the loop and the run directory) and :func:`train`.

The pieces of a run live beside this module: :mod:`.build` (student, heads, teacher strategy),
:mod:`.data_plan` (which images each iteration reads), :mod:`.step` (one iteration: crops, forward,
objectives, backward, optimizer step, teacher update), :mod:`.callbacks` (export, k-NN,
checkpoint, collapse monitor) and :mod:`.teacher` / :mod:`.objectives`. The Trainer owns the run
directory, checkpoints, resume, signals, messages and the loop that ties them together:

1. each iteration: :meth:`train_step`, the objectives' scheduled events, a line in ``metrics.jsonl``
   (non-finite steps are skipped and counted; ``train.max_nonfinite_steps`` in a row stop the run);
2. at the end of each epoch: the callbacks (export the backbone, k-NN on labelled data, ``checkpoint.pt``).

Exact resume: the data order is a permutation per pass over the data drawn from
``(train.seed, pass)``, and every random draw of iteration ``i`` comes from generators seeded
with ``(train.seed, i)`` (:mod:`.step`). Together with the saved model, optimizer, scaler and loss
states, N iterations in one go and k + resume + N - k iterations give the same numbers.

Under ``torchrun`` every rank runs this loop on its share of the global batch (see
:mod:`dinolab.runtime.distributed`); signals and stops are agreed between ranks, rank 0 writes the run directory.

SIGTERM / SIGINT finish the current iteration, save a checkpoint and stop (a second Ctrl-C aborts).

Examples:
    >>> from dinolab.train.config import load_config
    >>> cfg = load_config("default", ["train.epochs=1"])
    >>> result = train(cfg, "runs/demo")        # doctest: +SKIP
    >>> result.knn, result.knn_random_init      # doctest: +SKIP
    ({10: 0.93, 20: 0.92}, {10: 0.71, 20: 0.69})
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data import BadFileLog
from ..device import resolve_precision
from ..errors import DinolabError
from ..runtime import distributed, signals
from ..runtime.checkpoint import capture_rng_state, has_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from ..runtime.cpu_memory import keep_freed_memory
from ..runtime.distributed import Parallel
from ..runtime.fsdp import SHARD_DIR, gathered_backbone, prune_shards, save_shard
from ..runtime.messages import say
from ..runtime.metrics_log import METRICS_NAME, MetricsLog
from ..runtime.run_dir import RunDirectory
from .build import build_backbone, build_models, make_multicrop, random_init_backbone
from .callbacks import Callback, EpochEnd, default_callbacks
from .config import Config, load_config, validate
from .crop_plan import CropPlan, largest_global_crop
from .data import RunData, build_run_data
from .data_plan import BAD_FILES_NAME, DataPlan
from .evaluation import eval_image_size, knn_accuracy
from .objectives import Objectives
from .optim import build_optimizer, load_optimizer_state
from .schedules import Schedules
from .step import StepRunner
from .teacher import STUDENT_EXPORT_FILES, EMATeacher

CONFIG_NAME = "config.yaml"
_RUN_FILES = (CONFIG_NAME, METRICS_NAME, "checkpoint.pt", "checkpoint.prev.pt", *EMATeacher.export_files,
              BAD_FILES_NAME, *STUDENT_EXPORT_FILES)


class TrainingDiverged(DinolabError):
    """Too many non-finite steps in a row."""


@dataclass
class TrainResult:
    """What a run produced. ``knn`` / ``knn_start`` / ``knn_random_init`` / ``knn_raw_pixels``: top-1 accuracy per
    k (labelled data only); ``knn_start`` is that of the ``model.pretrained`` weights the run started from."""

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
    knn_start: dict[int, float] | None = None  # of the model.pretrained weights (None: a random start)
    knn_patch_mean: dict[int, float] | None = None  # the trained model's CLS and mean patch token (knn --patch-mean)


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _say(message: str) -> None:
    say(message)  # rank 0 only, above the progress bar (runtime/messages.py)


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
        callbacks: the :class:`~dinolab.train.callbacks.Callback` list the loop calls (set by
            :meth:`setup`; append to it after ``setup()`` to add work at each step or epoch end).
        After :meth:`setup`: ``student``, ``teacher`` (the models the objectives read),
        ``teacher_strategy`` (:class:`~dinolab.train.teacher.TeacherStrategy`), ``objectives``,
        ``optimizer``, ``schedules``, ``data`` (the images) and ``data_plan``, ``step``
        (:class:`~dinolab.train.step.StepRunner`).

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
        self.callbacks: list[Callback] = []

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Trainer:
        """Resume the run in ``run_dir`` with its saved config (plus ``overrides``, e.g. ``train.epochs=200``)."""
        path = RunDirectory.find_resume(run_dir, CONFIG_NAME, "dinolab train")
        return cls(load_config(path, overrides), run_dir, resume=True)

    # ------------------------------------------------------------------------------------------
    # set-up

    def _prepare_run_dir(self) -> None:
        """Check and lock the run directory; nothing in it changes before :meth:`_commit_run_dir`."""
        self.run = RunDirectory(self.run_dir, files=_RUN_FILES, folders=(SHARD_DIR,), config_name=CONFIG_NAME,
                                command="dinolab train", enabled=self.rank == 0)
        self.run.open(resume=self.resume, force=self.force)

    def _commit_run_dir(self) -> None:
        """The start is accepted (config, data and checkpoint checked): write the config (if new or changed)."""
        if self.rank == 0:
            self.run.commit(self.config.to_yaml() if not self.resume or self._config_changed() else None)

    def _config_changed(self) -> bool:
        saved = load_config(self.run_dir / CONFIG_NAME)
        return saved.to_dict() != self.config.to_dict()

    def _setup(self) -> None:
        """Data, models, teacher, optimizer, step and callbacks, in the order that fixes the random draws."""
        c = self.config
        self.device = distributed.train_device(c.train.device)  # cuda:LOCAL_RANK under torchrun
        self.precision = resolve_precision(c.train.precision, self.device)
        if self.device.type == "cpu" and c.train.keep_freed_memory:
            keep_freed_memory()  # no page faults on each step's large buffers (cpu_memory.py)
        _seed_all(c.train.seed)
        self.data: RunData = build_run_data(c)
        self.data_plan = DataPlan(c, self.data, self.device, self.run_dir, largest_global_crop(c),
                                  self.rank, self.world_size)
        self.iters_per_epoch = ipe = self.data_plan.iters_per_epoch
        self.schedules = Schedules.from_config(c, ipe)
        self.objectives = Objectives.from_config(c).to(self.device)
        self._pretrained_note: list[str] = []  # said in setup() unless a checkpoint replaces these weights
        self.student, self.teacher_strategy = build_models(c, self.objectives, self.device,
                                                           announce=self._pretrained_note.append)
        self.teacher = self.teacher_strategy.model
        if self.teacher_strategy.describe():
            _say(self.teacher_strategy.describe())
        self.parallel = Parallel(c.train.distributed, self.device)
        # the module that computes the loss: DDP / FSDP around the student (FSDP shards both models in place)
        self.step_module = self.parallel.wrap(self.student, self.objectives, self.teacher)
        self.teacher_strategy.on_wrapped()
        self._saved_step: int | None = None  # iteration of the last checkpoint written or read
        self.objectives.setup(self.student, self.teacher, ipe)  # e.g. the Gram teacher
        self.optimizer = build_optimizer(self.student, c)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.step = StepRunner(c, device=self.device, precision=self.precision, rank=self.rank,
                               schedules=self.schedules, optimizer=self.optimizer, scaler=self.scaler,
                               parallel=self.parallel, step_module=self.step_module, objectives=self.objectives,
                               teacher=self.teacher_strategy, data=self.data_plan, crop_plan=CropPlan(c, ipe),
                               multicrop=make_multicrop(c), make_multicrop=lambda sizes: make_multicrop(c, sizes))
        self.metrics = MetricsLog(self.run_dir / METRICS_NAME, enabled=self.rank == 0,
                                  resume_command=f"dinolab train --resume {self.run_dir}")
        self.callbacks = default_callbacks(self)
        self.nonfinite_streak = 0
        self.last_knn: dict[int, float] | None = None
        self.last_knn_patch_mean: dict[int, float] | None = None  # of this process's last evaluation

    @property
    def multicrop(self) -> Any:
        """The run's :class:`~dinolab.data.MultiCrop` (settable: benchmarks fix the crops)."""
        return self.step.multicrop

    @multicrop.setter
    def multicrop(self, value: Any) -> None:
        self.step.multicrop = value

    # ------------------------------------------------------------------------------------------
    # state

    def state_dict(self, iteration: int) -> dict[str, Any]:
        """Everything needed to continue after ``iteration`` completed iterations (tensors and plain data only)."""
        return {
            "iteration": iteration,
            "epoch": iteration // self.iters_per_epoch,
            "student": self.student.state_dict(),
            **self.teacher_strategy.state_dict(),  # "teacher", "distill" (a frozen teacher is re-read)
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "objectives": self.objectives.state_dict(),
            "rng": capture_rng_state({"multicrop": self.step.generator}),
            "data": self.data_plan.position(iteration),
            "bad_files": [list(item) for item in self.data_plan.bad_files.items],
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
        if data.get("batches_per_pass") not in (None, self.data_plan.batches_per_pass):
            raise DinolabError(f"the data of {self.run_dir} changed since the checkpoint ({data['batches_per_pass']} "
                               f"batches per pass then, {self.data_plan.batches_per_pass} now); resume with the same "
                               f"data.source and train.batch_size, or start a new run")
        try:
            self.student.load_state_dict(state["student"])
            self.teacher_strategy.load_state_dict(state, self.run_dir)
            self.objectives.load_state_dict(state["objectives"])
            load_optimizer_state(self.optimizer, state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise DinolabError(f"the checkpoint in {self.run_dir} does not match the config (model or heads changed?): "
                               f"{str(e).splitlines()[0]}; resume with the run's own config.yaml") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], {"multicrop": self.step.generator})
        self.data_plan.bad_files.add(tuple(item) for item in state.get("bad_files", []))
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
            self.data_plan.write_bad_files()
            if sharded:  # keep the shards of checkpoint.pt and checkpoint.prev.pt
                prune_shards(self.run_dir, {iteration, self._saved_step if self._saved_step is not None else iteration})
        self._saved_step = iteration
        distributed.barrier()

    # ------------------------------------------------------------------------------------------
    # the pieces the loop calls (kept here as the names tests and benchmarks use)

    def batches(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """``(iteration, micro-batches)`` from iteration ``start`` on (:meth:`DataPlan.batches`)."""
        return self.data_plan.batches(start)

    def train_step(self, it: int, micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
        """Run iteration ``it`` on its micro-batches; returns the metrics record (``skipped`` set if no step)."""
        return self.step.run(it, micro_batches, self.on_loss)

    def knn(self, backbone: nn.Module, patch_mean_out: dict[int, float] | None = None) -> dict[int, float]:
        """Top-1 k-NN accuracy per k of ``backbone``'s CLS (train split as memory, held-out split as queries);
        ``patch_mean_out`` is filled with that of the CLS and mean patch token (:func:`knn_accuracy`)."""
        return knn_accuracy(backbone, self.data, self.config, self.device, self.precision,
                            self.data_plan.eval_bad_files, preprocess=self.preprocess(), patch_mean_out=patch_mean_out)

    def knn_random_init(self) -> dict[int, float]:
        """k-NN of the same architecture at its (seeded) random initialisation: the baseline to beat."""
        return self.knn(random_init_backbone(self.config).to(self.device))

    def knn_start(self) -> dict[int, float] | None:
        """k-NN of the ``model.pretrained`` weights the run started from (None when it started at random)."""
        if not self.config.model.pretrained:
            return None
        return self.knn(build_backbone(self.config).to(self.device).eval())

    def preprocess(self):
        """How the exported backbone sees: the global crop size and the training normalisation."""
        from ..models.preprocess import Preprocess

        return Preprocess(self.config.crops.global_crops_size, mean=self.multicrop.mean, std=self.multicrop.std)

    def eval_backbone(self) -> nn.Module:
        """The backbone to use and evaluate: the EMA teacher, or the EMA student when distilling."""
        return self.teacher_strategy.eval_backbone()

    def export(self, iteration: int, backbone: nn.Module | None = None) -> Path:
        """Write :meth:`eval_backbone` (or ``backbone``, its gathered copy under FSDP) to the run directory
        (``teacher_backbone`` / ``student_ema_backbone``)."""
        return self.teacher_strategy.export(self.run_dir, iteration, iteration // self.iters_per_epoch, backbone,
                                            self.preprocess())

    def bad_file_report(self) -> BadFileLog:
        """Every unreadable file met so far, by training steps or the k-NN evaluation."""
        return self.data_plan.bad_file_report()

    def _end_of_epoch(self, done: int, last: bool) -> None:
        backbone = self.eval_backbone()
        if self.parallel.sharded:  # a full copy on rank 0 (every rank takes part in gathering it)
            backbone = gathered_backbone(backbone, self.device)
        end = EpochEnd(done=done, epoch=done // self.iters_per_epoch, last=last, backbone=backbone)
        for callback in self.callbacks:
            callback.on_epoch_end(self, end)

    # ------------------------------------------------------------------------------------------
    # the loop

    def request_stop(self, reason: str = "request") -> None:
        """Finish the current step, save a checkpoint and return from :meth:`fit` (``stopped_by=reason``)."""
        self._stop = reason

    def _on_signal(self, signum: int, frame: Any) -> None:  # only in this process, not in loader workers
        if self._stop is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request_stop(signal.Signals(signum).name)
        _say(f"{self._stop} received: finishing the current step, then saving a checkpoint "
             f"(press Ctrl-C again to abort without saving)")

    def _install_signal_handlers(self) -> dict[int, Any]:
        return signals.install(self._on_signal)

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
        for callback in self.callbacks:
            callback.on_step(self, record)
        bar.set_postfix(epoch=f"{record['epoch'] + 1}/{self.config.train.epochs}", loss=f"{record['loss']:.3f}",
                        img_s=f"{record['images_per_s']:.0f}", refresh=False)

    def setup(self) -> int:
        """Create (or reopen) the run directory, build data, models and optimizer; returns the first iteration."""
        if self._ready:
            return self._start
        for w in self.warnings:
            _say(f"warning: {w}")
        self._prepare_run_dir()
        try:
            self._setup()
            self._start = 0
            state = load_checkpoint(self.run_dir) if self.resume and has_checkpoint(self.run_dir) else None
            if state is not None:
                self._start = self.load_state_dict(state)  # may refuse: the run directory is still untouched
            self._commit_run_dir()
            if state is None:
                for note in self._pretrained_note:
                    _say(note)
        except BaseException:
            self.run.abandon()
            raise
        total = self.schedules.total_iters
        if self.resume:
            self.metrics.truncate(self._start)
        if self.resume and state is None:  # stopped (kill -9) before its first checkpoint
            _say(f"{self.run_dir} has no checkpoint yet (the run stopped before saving one): starting at step 0")
        elif self.resume and self._start < total:
            _say(f"resuming {self.run_dir} at step {self._start} (epoch {self._start // self.iters_per_epoch + 1}"
                 f"/{self.config.train.epochs})")
        self._ready = True
        return self._start

    def say(self, message: str) -> None:
        """A message to the user (rank 0 only; above the progress bar)."""
        _say(message)

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
            result = self._fit()
            if self._owns_group:
                # no rank destroys the group while a peer still has collectives in flight (the suspected
                # cause of a gloo rank aborting at exit: "terminate called without an active exception")
                distributed.barrier()
            return result
        finally:
            if self._ready:
                self.run.close()  # the run's lock
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
        return self._finish(start, done, last_record, t_start)

    def _finish(self, start: int, done: int, last_record: dict[str, Any], t_start: float) -> TrainResult:
        """The closing messages (stop, final k-NN against the starting weights and random initialisation, bad
        files) and the result."""
        total = self.schedules.total_iters
        stopped = self._stop if done < total else None
        knn_random = knn_raw = knn_start = None
        if stopped:
            _say(f"stopped by {stopped} at step {done}; checkpoint saved. Continue with: "
                 f"dinolab train --resume {self.run_dir}")
        elif done == start:
            _say(f"{self.run_dir} already finished its {total} steps; raise train.epochs to train longer")
        elif self.last_knn is not None and self.rank == 0:
            from ..data.badfiles import warnings_held_back
            from ..eval.baselines import raw_pixel_knn

            knn_random, knn_start = self.knn_random_init(), self.knn_start()
            e = self.config.eval
            with warnings_held_back():  # unreadable files were named by the k-NN evaluations already
                knn_raw = raw_pixel_knn(self.data.train, self.data.val, eval_image_size(self.config), k=e.knn_k,
                                        temperature=e.knn_temperature, device=self.device)
            self.metrics.write({"step": done, **{f"knn_top1_start@{k}": v for k, v in (knn_start or {}).items()},
                                **{f"knn_top1_random_init@{k}": v for k, v in knn_random.items()},
                                **{f"knn_top1_raw_pixels@{k}": v for k, v in knn_raw.items()}})
            self.metrics.close()
            k = 20 if 20 in self.last_knn else max(self.last_knn)
            start = f"{knn_start[k]:.1%} at the start ({self.config.model.pretrained}), " if knn_start else ""
            _say(f"final k-NN top-1 (k={k}): {self.last_knn[k]:.1%} after pretraining vs {start}{knn_random[k]:.1%} "
                 f"for the same architecture at random initialisation and {knn_raw[k]:.1%} on raw pixels")
        if self.rank == 0 and self.bad_file_report().count:
            _say(self.bad_file_report().summary())
        return TrainResult(run_dir=self.run_dir, iterations=done, epochs=done / self.iters_per_epoch,
                           loss=last_record.get("loss"), knn=self.last_knn, knn_random_init=knn_random,
                           knn_raw_pixels=knn_raw, knn_start=knn_start, knn_patch_mean=self.last_knn_patch_mean,
                           stopped_by=stopped, wall_time=time.perf_counter() - t_start,
                           exported=self.run_dir / self.teacher_strategy.export_name)


_STOPS = (None, "request", "SIGINT", "SIGTERM")  # stop reasons, by precedence when ranks disagree


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train(config: Config, run_dir: str | os.PathLike | None = None, *, force: bool = False) -> TrainResult:
    """Pretrain with ``config`` into ``run_dir`` (see :class:`Trainer`)."""
    return Trainer(config, run_dir, force=force).fit()
