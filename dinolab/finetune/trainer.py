"""The fine-tuning loop: run folder, data, model, epochs, early stopping, calibration, export.

Built on :mod:`dinolab.runtime` as :func:`dinolab.text.align` is: a locked
:class:`~dinolab.runtime.run_dir.RunDirectory` (refused when it holds files unless ``force``),
``config.yaml``, ``metrics.jsonl`` (one record per epoch), an atomic ``checkpoint.pt`` after every
epoch and when SIGTERM / Ctrl-C stop the run after the current step. Every random draw of step
``i`` (data order of its epoch, crops, flips, drop-path) is seeded from ``(seed, i)``, so a resumed
run continues the uninterrupted run's trajectory exactly. The checkpoint holds only what trains (the
head, the unfrozen blocks or the adapters), the optimizer and the early-stopping state; the frozen
rest is read again from the weights.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DinolabError
from ..runtime.checkpoint import resume_state, save_checkpoint
from ..runtime.config_loader import check_fields, to_yaml
from ..runtime.messages import progress, say
from ..runtime.metrics_log import METRICS_NAME, MetricsLog
from ..runtime.run_dir import SKIPPED_LOG, RunDirectory
from ..runtime.signals import StopSignals
from . import FinetuneResult
from .config import CONFIG_NAME, FINETUNE_SCHEMA, FinetuneConfig
from .data import Images

logger = logging.getLogger("dinolab.finetune")

RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", METRICS_NAME, SKIPPED_LOG, "classifier.safetensors",
             "summary.json", "confusion.png")


def resolve_config(weights: Any, train_data: Any, val: Any, mode: str, overrides: dict[str, Any]) -> FinetuneConfig:
    """Defaults (or ``overrides["config"]``), then the arguments and ``overrides``; ranges checked."""
    base = overrides.pop("config", None)
    cfg = copy.deepcopy(base) if base is not None else FinetuneConfig()
    values = {"mode": mode, "val": None if val is None else str(val), **overrides}
    if not isinstance(weights, nn.Module):
        values["weights"] = str(weights)
    values["train_data"] = str(train_data)
    FINETUNE_SCHEMA.merge(cfg, values, where=" (keyword argument)")
    check_fields(cfg)
    return cfg


def run_finetune(weights: Any, train_data: Any, out: str | os.PathLike, *, val: Any = None, mode: str = "head",
                 force: bool = False, resume: bool = False, **overrides: Any) -> FinetuneResult:
    """:func:`dinolab.finetune.finetune` (see there)."""
    on_epoch, on_step = overrides.pop("on_epoch", None), overrides.pop("on_step", None)
    cfg = resolve_config(weights, train_data, val, mode, overrides)
    if resume and force:
        raise ConfigError("--resume continues the run in the output folder and --force replaces it; pass one")
    run = RunDirectory(out, files=RUN_FILES, config_name=CONFIG_NAME, command="dinolab finetune")
    run.open(resume=resume, force=force)
    try:
        job = prepare(weights, cfg, Path(out), resume)
        job.on_step = on_step
        run.commit(to_yaml(cfg))
    except BaseException:
        run.abandon()
        raise
    try:
        stopped = train(job, on_epoch)
        if stopped:
            say(f"stopped by {stopped} at step {job.step}; checkpoint saved. Continue with: {resume_command(out)}")
            return FinetuneResult(Path(out), None, job.classes, {}, 1.0, history=job.history, stopped_by=stopped)
        from .report import finish

        return finish(job)
    finally:
        run.close()


@dataclass
class Job:
    """Everything one fine-tuning run trains with, and where it stands."""

    cfg: FinetuneConfig
    run_dir: Path
    model: Any  # Classifier (backbone possibly with LoRA adapters)
    classes: list[str]
    train: Images
    val: Images
    counts: np.ndarray
    held_out: int  # images taken from the training data for validation (0 with --val)
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str
    class_weights: torch.Tensor | None
    log_prior: torch.Tensor
    epochs: int  # cfg.epochs_for(steps_per_epoch)
    steps_per_epoch: int
    total_steps: int
    warmup: int
    fingerprint: dict[str, Any]
    bad: list[tuple[str, str]]
    train_features: torch.Tensor | None = None  # head mode without augmentation: computed once
    val_features: torch.Tensor | None = None  # head mode: computed once
    scaler: Any = None
    start_epoch: int = 0
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # metric, epoch, state
    since_best: int = 0
    early_stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    stops: StopSignals | None = None
    on_step: Callable[[int, float], None] | None = None  # instrumentation: f(step, loss) after each step


def prepare(weights: Any, cfg: FinetuneConfig, run_dir: Path, resume: bool) -> Job:
    """Read the backbone and the data, build the model and optimizer; restore the checkpoint on resume."""
    from .setup import build_job

    job = build_job(weights, cfg, run_dir)
    state = resume_state(run_dir, "epoch") if resume else None
    if state is not None:
        restore(job, state)
    return job


def trainable_state(job: Job) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in job.model.named_parameters() if p.requires_grad}


def load_trainable(job: Job, state: dict[str, torch.Tensor]) -> None:
    params = dict(job.model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def restore(job: Job, state: dict[str, Any]) -> None:
    if state.get("fingerprint") != job.fingerprint:
        raise DinolabError(f"the checkpoint in {job.run_dir} was made with other data or settings "
                           f"({state.get('fingerprint')} vs now {job.fingerprint}); resume with the same WEIGHTS, data "
                           f"and mode, or start over with --force")
    load_trainable(job, state["trainable"])
    job.optimizer.load_state_dict(state["optimizer"])
    job.start_epoch, job.step = int(state["epoch"]), int(state["iteration"])
    job.epoch_losses = [float(v) for v in state.get("epoch_losses", [])]
    job.best, job.since_best = dict(state["best"]), int(state["since_best"])
    job.early_stopped, job.history = bool(state["early_stopped"]), list(state["history"])
    say(f"resuming {job.run_dir} at epoch {job.start_epoch}, step {job.step}")


def checkpoint(job: Job, epochs_done: int) -> None:
    save_checkpoint(job.run_dir, {
        "iteration": job.step, "epoch": epochs_done, "epoch_losses": list(job.epoch_losses),
        "trainable": trainable_state(job), "optimizer": job.optimizer.state_dict(), "best": job.best,
        "since_best": job.since_best, "early_stopped": job.early_stopped, "history": job.history,
        "fingerprint": job.fingerprint})


# ------------------------------------------------------------------------------------------------
# one step, one epoch


def _seed(job: Job, step: int) -> torch.Generator:
    s = (job.cfg.seed * 1_000_003 + step) % (2**63)
    torch.manual_seed(s)  # drop-path draws
    return torch.Generator().manual_seed(s)


def epoch_order(job: Job, epoch: int) -> np.ndarray:
    """The training image of each position in epoch ``epoch`` (a permutation, or class-balanced draws)."""
    from .imbalance import balanced_indices

    g = torch.Generator().manual_seed(job.cfg.seed * 7919 + epoch)
    labels = job.train.labels.numpy()
    if job.cfg.balance == "sampler":
        return balanced_indices(labels, len(job.classes), len(labels), g)
    return torch.randperm(len(labels), generator=g).numpy()


def loss_fn(job: Job, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the run's class weights, label smoothing and (``logit_adjust=loss``) adjustment."""
    from .imbalance import adjust_logits_for_loss

    z = logits.float()
    if job.cfg.logit_adjust == "loss":
        z = adjust_logits_for_loss(z, job.log_prior, job.cfg.tau)
    return F.cross_entropy(z, y, weight=job.class_weights, label_smoothing=job.cfg.label_smoothing)


def batch_logits(job: Job, idx: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    from ..device import autocast
    from .augment import augment_batch

    model, cfg = job.model, job.cfg
    with autocast(job.device, job.precision):
        if job.train_features is not None:
            return model.head(job.train_features[idx].to(job.device))
        x = augment_batch(job.train.pixels[idx], model.preprocess.image_size, crop=cfg.crop, flip=cfg.flip,
                          generator=generator, scale=(cfg.crop_scale, 1.0))
        x = model.preprocess.normalize(x.to(job.device))  # floats in [0, 255] as uint8 would be
        if cfg.kind()[0] == "head":
            with torch.no_grad():
                feats = model.features(x)
            return model.head(feats.float())
        return model(x)


def step(job: Job, idx: np.ndarray) -> float:
    """One optimizer step on training images ``idx``; returns the loss."""
    from ..runtime.schedules import cosine_schedule

    factor = cosine_schedule(job.step, 1.0, 0.01, job.total_steps, job.warmup, start_warmup_value=0.01)
    for g in job.optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
    gen = _seed(job, job.step)
    y = job.train.labels[idx].to(job.device)
    loss = loss_fn(job, batch_logits(job, idx, gen), y)
    job.optimizer.zero_grad(set_to_none=True)
    params = [p for g in job.optimizer.param_groups for p in g["params"]]
    if job.scaler is not None:
        job.scaler.scale(loss).backward()
        job.scaler.unscale_(job.optimizer)
    else:
        loss.backward()
    if job.cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(params, job.cfg.clip_grad)
    if job.scaler is not None:
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        job.optimizer.step()
    job.step += 1
    return float(loss.detach())


def set_train_mode(job: Job) -> None:
    job.model.train()
    if job.cfg.kind()[0] == "head":
        job.model.backbone.eval()


def run_epoch(job: Job, epoch: int) -> bool:
    """Train epoch ``epoch`` (from where a mid-epoch checkpoint left it); False when a signal stopped it."""
    cfg, n = job.cfg, len(job.train)
    set_train_mode(job)
    order = epoch_order(job, epoch)
    batches = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    done = job.step - epoch * job.steps_per_epoch
    bar = progress(batches[done:], enabled=cfg.progress, desc=f"finetune epoch {epoch + 1}/{job.epochs}",
                   unit="batch", leave=False)
    for idx in bar:
        job.epoch_losses.append(step(job, idx))
        if job.on_step is not None:
            job.on_step(job.step, job.epoch_losses[-1])
        bar.set_postfix(loss=f"{job.epoch_losses[-1]:.3f}")
        if job.stops is not None and job.stops.reason and job.step < (epoch + 1) * job.steps_per_epoch:
            bar.close()
            return False
    return True


# ------------------------------------------------------------------------------------------------
# validation, early stopping, the epochs


@torch.no_grad()
def val_logits(job: Job) -> torch.Tensor:
    """``(N_val, C)`` float32 logits of the validation images (post-hoc adjustment not applied)."""
    from ..device import autocast

    model = job.model
    model.eval()
    if job.val_features is not None:
        with autocast(job.device, job.precision):
            return model.head(job.val_features.to(job.device)).float().cpu()
    out = []
    for i in range(0, len(job.val), 64):
        x = model.preprocess.normalize(job.val.pixels[i:i + 64].to(job.device))
        with autocast(job.device, job.precision):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def adjusted(job: Job, logits: torch.Tensor) -> torch.Tensor:
    from .imbalance import adjust_logits_posthoc

    if job.cfg.logit_adjust == "posthoc":
        return adjust_logits_posthoc(logits, job.log_prior.cpu(), job.cfg.tau)
    return logits


def evaluate(job: Job) -> dict[str, Any]:
    """Validation loss and metrics of the model now (with the post-hoc adjustment it will be saved with)."""
    from ..eval.metrics import classification_report

    z = adjusted(job, val_logits(job))
    y = job.val.labels
    report = classification_report(y.numpy(), z.argmax(1).numpy(), job.classes)
    return {"val_loss": float(F.cross_entropy(z, y)), "val_accuracy": report["accuracy"],
            "val_balanced_accuracy": report["balanced_accuracy"], "val_macro_f1": report["macro_f1"]}


def end_of_epoch(job: Job, epoch: int, metrics: MetricsLog, on_epoch: Callable | None) -> None:
    record: dict[str, Any] = {"step": job.step, "epoch": epoch + 1,
                              "loss": float(np.mean(job.epoch_losses)) if job.epoch_losses else math.nan,
                              "lr": max(g["lr"] for g in job.optimizer.param_groups), **evaluate(job)}
    job.epoch_losses = []
    value = record[f"val_{job.cfg.select}"]
    if not job.best or value > job.best["metric"]:
        job.best = {"metric": value, "epoch": epoch + 1, "state": trainable_state(job)}
        job.since_best = 0
    else:
        job.since_best += 1
    record["best_epoch"] = job.best["epoch"]
    job.early_stopped = 0 < job.cfg.patience <= job.since_best
    job.history.append(record)
    metrics.write(record)
    checkpoint(job, epoch + 1)
    logger.info("finetune epoch %d/%d: %s", epoch + 1, job.epochs, record)
    if on_epoch is not None:
        on_epoch(epoch + 1, record)


def train(job: Job, on_epoch: Callable | None = None) -> str | None:
    """The epochs left; returns the signal that stopped the run (a checkpoint saved), or None."""
    from ..runtime.loop import resumable_loop

    with resumable_loop(job.run_dir, job.step, resume_command(job.run_dir), say) as (metrics, stops):
        job.stops = stops
        for epoch in range(job.start_epoch, job.epochs):
            if job.early_stopped:
                break
            if not run_epoch(job, epoch):
                checkpoint(job, epoch)
                return stops.reason
            end_of_epoch(job, epoch, metrics, on_epoch)
            if job.early_stopped:
                say(f"early stop after epoch {epoch + 1}: no better val {job.cfg.select} for "
                    f"{job.since_best} epochs (best epoch {job.best['epoch']})")
                break
            if stops.reason and epoch + 1 < job.epochs:
                return stops.reason
    return None


def resume_command(run_dir: str | os.PathLike) -> str:
    return f"dinolab finetune --resume --out {run_dir}"
