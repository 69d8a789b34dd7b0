"""Align a text encoder to a frozen DINO backbone (LiT / dino.txt: "learn to see first, talk later").

:func:`align` trains a :class:`~dinolab.text.vision_head.VisionHead` on the frozen backbone's
``concat(CLS, mean patch)`` features and a :class:`~dinolab.text.text_encoder.TextEncoder` from
scratch on the pairs' captions, with the symmetric CLIP loss and a learnable temperature (pairs
of a batch with identical captions count as matches of each other, see
:func:`~dinolab.text.clip_loss.clip_loss`'s ``groups``). The
backbone never changes: it has ``requires_grad=False``, stays in eval mode, and its state-dict
fingerprint is checked to be bit-identical after training. Its features are computed once per
image (:mod:`.align_features`).

The settings are an :class:`~dinolab.text.align_config.AlignConfig` (keyword arguments of
:func:`align` are its fields). The run folder ``out`` is a :class:`~dinolab.runtime.run_dir.RunDirectory`
(locked, refused when it holds files unless ``force``, untouched until the start is accepted) and
receives ``config.yaml``, the aligned model (see :mod:`dinolab.text.aligned`), ``metrics.jsonl``
(one record per epoch: loss, lr, logit scale, and zero-shot accuracy on the pairs' own classes
when they have them), ``checkpoint.pt`` (atomic, after every epoch and when SIGTERM / Ctrl-C stop
the run after the current step; ``resume=True`` continues the same trajectory) and
``skipped.log`` when rows or images were left out.

Captions are augmented with word dropout (each word left out with probability
``word_dropout``, keeping at least one), so that short prompts such as "a circle." land near the
full captions they are part of.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, DinolabError
from ..runtime.checkpoint import capture_rng_state, restore_rng_state, resume_state, save_checkpoint
from ..runtime.config_loader import check_fields, to_yaml
from ..runtime.messages import progress, say
from ..runtime.metrics_log import METRICS_NAME, MetricsLog
from ..runtime.run_dir import SKIPPED_LOG, RunDirectory, write_skipped_log
from ..runtime.signals import StopSignals
from .align_config import ALIGN_SCHEMA, CONFIG_NAME, AlignConfig
from .align_features import FeatureSource, cached_zeroshot
from .aligned import AlignedModel, save_aligned, state_fingerprint
from .clip_loss import MAX_LOGIT_SCALE, clip_loss
from .pairs import Pairs, load_pairs
from .text_encoder import TextEncoder
from .tokenizer import WordTokenizer
from .vision_head import VisionHead

logger = logging.getLogger("dinolab.text")

_RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", METRICS_NAME, SKIPPED_LOG)


def align(weights_or_model: str | os.PathLike | nn.Module, pairs: str | os.PathLike | Pairs, *,
          out: str | os.PathLike | None = None, config: AlignConfig | None = None, force: bool = False,
          resume: bool = False, on_step: Callable[[int, float], None] | None = None, **options: Any) -> AlignedModel:
    """Train a vision head and a text encoder on a frozen backbone; returns the :class:`AlignedModel`.

    Args:
        weights_or_model: backbone weights (any file :func:`dinolab.load_model` reads) or a model.
        pairs: a CSV (``image,caption``), ``builtin:shapes[...]``, or :class:`~dinolab.text.pairs.Pairs`.
        out: run folder for the aligned model, metrics and checkpoint (None: write nothing).
        config: the settings (default :class:`AlignConfig`); ``options`` (its field names: ``epochs``,
            ``batch_size``, ``lr``, ...) override them.
        force: replace an earlier run in ``out``. resume: continue the run in ``out`` from its checkpoint.
        on_step: ``f(step, loss)`` after every optimizer step (instrumentation, tests).

    The returned model has ``history`` (the epoch records), ``skipped`` (rows and images left out)
    and ``stopped_by`` (``"SIGTERM"`` / ``"SIGINT"`` when a signal stopped the run, else None).

    Examples:
        >>> import dinolab
        >>> bb = dinolab.create_model("vit_tiny", img_size=32, patch_size=16, depth=1)
        >>> m = align(bb, "builtin:shapes?n=16&size=32", epochs=1, batch_size=8, image_size=32,
        ...           device="cpu", progress=False)
        >>> m.encode_text("a red circle").shape
        torch.Size([1, 256])
    """
    cfg = resolve_config(config, options, weights_or_model, pairs)
    if resume and force:
        raise ConfigError("--resume continues the run in the output folder and --force replaces it; pass one")
    if resume and out is None:
        raise ConfigError("resume=True needs the run folder: pass out=DIR")
    run = None
    if out is not None:
        run = RunDirectory(out, files=_RUN_FILES, config_name=CONFIG_NAME, command="dinolab align")
        run.open(resume=resume, force=force)
    try:
        job = _prepare(weights_or_model, pairs, cfg, Path(out) if out is not None else None, resume)
        if run is not None:
            run.commit(to_yaml(cfg))
    except BaseException:
        if run is not None:
            run.abandon()
        raise
    try:
        stopped = _train(job, on_step)
    finally:
        if run is not None:
            run.close()
    return _finish(job, stopped)


def resolve_config(config: AlignConfig | None, options: dict[str, Any], weights_or_model: Any,
                   pairs: Any) -> AlignConfig:
    """``config`` (or the defaults) with ``options`` merged and the inputs recorded; ranges checked."""
    cfg = copy.deepcopy(config) if config is not None else AlignConfig()
    ALIGN_SCHEMA.merge(cfg, options, where=" (keyword argument)")
    if not isinstance(weights_or_model, nn.Module):
        cfg.weights = str(weights_or_model)
    cfg.pairs = pairs.source if isinstance(pairs, Pairs) else str(pairs)
    check_fields(cfg)
    if isinstance(weights_or_model, nn.Module) and not cfg.copy_backbone:
        raise ConfigError("copy_backbone=False needs backbone weights given as a path, not a model object")
    return cfg


@dataclass
class _Job:
    """Everything one alignment run trains with, and where it stands."""

    cfg: AlignConfig
    run_dir: Path | None
    backbone: nn.Module
    backbone_path: Path | None
    fingerprint: str
    features: FeatureSource
    skipped: list
    model: AlignedModel
    optimizer: torch.optim.Optimizer
    word_ids: list[list[int]]
    groups: torch.Tensor
    steps_per_epoch: int
    total_steps: int
    warmup: int
    hyper: dict[str, Any]
    rng: random.Random
    start_epoch: int = 0
    step: int = 0
    epoch_losses: list[float] = field(default_factory=list)  # of the epoch under way (a mid-epoch resume)
    stops: StopSignals | None = None


def _backbone(weights_or_model: str | os.PathLike | nn.Module) -> tuple[nn.Module, Path | None]:
    from ..models.weights import load_model

    if isinstance(weights_or_model, nn.Module):
        return weights_or_model, None
    return load_model(weights_or_model), Path(weights_or_model)


def _prepare(weights_or_model: Any, pairs: Any, cfg: AlignConfig, run_dir: Path | None, resume: bool) -> _Job:
    """Backbone, features, tokenizer and models (in the order that fixes the random draws), restored on resume."""
    from ..device import resolve_device, resolve_precision

    backbone, backbone_path = _backbone(weights_or_model)
    pairs = pairs if isinstance(pairs, Pairs) else load_pairs(pairs)
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
    backbone.requires_grad_(False).eval().to(dev)
    fingerprint = state_fingerprint(backbone)
    torch.manual_seed(cfg.seed)
    head = VisionHead(backbone.embed_dim, cfg.embed_dim, num_blocks=cfg.head_blocks, num_heads=_heads_for(backbone),
                      hidden_dim=cfg.head_hidden_dim)
    pp = cfg.inference_options().preprocess_for(backbone, announce="align" if cfg.progress else None)
    features = FeatureSource(backbone, pairs, preprocess=pp, needs_tokens=head.needs_tokens, device=dev,
                             precision=prec, num_workers=cfg.workers(), progress=cfg.progress,
                             max_bad_fraction=cfg.max_bad_fraction, cache_limit_bytes=cfg.cache_limit_bytes)
    captions = [pairs.captions[i] for i in features.kept]
    if len(captions) < 2:
        raise DataError(f"{pairs.source}: only {len(captions)} usable pair(s); contrastive training needs at least 2")
    state = resume_state(run_dir, "epoch") if resume else None
    if state is not None and state.get("backbone_fingerprint") != fingerprint:
        raise DinolabError(f"the checkpoint in {run_dir} was trained on another backbone; resume with the same "
                           f"--weights, or start over with --force")
    tokenizer = (WordTokenizer(state["vocab"], int(state["context_length"])) if state is not None
                 else WordTokenizer.build(captions))
    text = TextEncoder(len(tokenizer), cfg.embed_dim, context_length=tokenizer.context_length, width=cfg.text_width,
                       depth=cfg.text_depth, num_heads=cfg.text_heads, causal=cfg.causal, eos_id=tokenizer.eos_id,
                       pad_id=tokenizer.pad_id)
    model = AlignedModel(backbone, head, text, tokenizer, preprocess=pp, backbone_fingerprint=fingerprint).to(dev)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    caption_ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    n = len(captions)
    steps_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
    total_steps = cfg.epochs * steps_per_epoch
    hyper = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                 warmup_epochs=cfg.warmup_epochs, word_dropout=cfg.word_dropout, seed=cfg.seed, pairs=pairs.source,
                 n_pairs=n, precision=prec)
    job = _Job(cfg=cfg, run_dir=run_dir, backbone=backbone, backbone_path=backbone_path, fingerprint=fingerprint,
               features=features, skipped=list(pairs.skipped) + features.bad, model=model, optimizer=optimizer,
               word_ids=[tokenizer.token_ids(c) for c in captions],
               groups=torch.tensor([caption_ids[c] for c in captions], device=dev), steps_per_epoch=steps_per_epoch,
               total_steps=total_steps, warmup=min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps - 1),
               hyper=hyper, rng=random.Random(cfg.seed))
    if state is not None:
        _restore(job, state)
    return job


def _restore(job: _Job, state: dict[str, Any]) -> None:
    """Continue after the checkpoint ``state`` (an epoch end, or mid-epoch after a signal)."""
    m = job.model
    m.vision_head.load_state_dict(state["vision_head"])
    m.text_encoder.load_state_dict(state["text_encoder"])
    m.logit_scale.data.copy_(state["logit_scale"])
    job.optimizer.load_state_dict(state["optimizer"])
    job.start_epoch, job.step = int(state["epoch"]), int(state["iteration"])
    job.epoch_losses = [float(v) for v in state.get("epoch_losses", [])]
    if "word_rng" in state:  # exact: the word-dropout stream where it stopped
        version, internal, gauss = state["word_rng"]
        job.rng.setstate((version, tuple(internal), gauss))
        restore_rng_state(state["rng"])
    else:  # a checkpoint of an earlier version: a fresh stream per resumed epoch
        job.rng = random.Random(job.cfg.seed + 7919 * job.start_epoch)


def _checkpoint(job: _Job, epochs_done: int) -> None:
    if job.run_dir is None:
        return
    m, tok = job.model, job.model.tokenizer
    version, internal, gauss = job.rng.getstate()
    save_checkpoint(job.run_dir, {
        "iteration": job.step, "epoch": epochs_done, "epoch_losses": list(job.epoch_losses),
        "vision_head": m.vision_head.state_dict(), "text_encoder": m.text_encoder.state_dict(),
        "logit_scale": m.logit_scale.detach(), "optimizer": job.optimizer.state_dict(), "vocab": tok.vocab,
        "context_length": tok.context_length, "backbone_fingerprint": job.fingerprint, "hyper": job.hyper,
        "word_rng": [version, list(internal), gauss], "rng": capture_rng_state()})


def _step(job: _Job, idx: list[int]) -> float:
    """One optimizer step on the pairs ``idx``; returns the loss."""
    from ..runtime.schedules import cosine_schedule

    cfg, model, tok = job.cfg, job.model, job.model.tokenizer
    for g in job.optimizer.param_groups:
        g["lr"] = cosine_schedule(job.step, cfg.lr, cfg.lr / 100, job.total_steps, job.warmup,
                                  start_warmup_value=cfg.lr / 100)
    ids = tok.pack([_drop_words(job.word_ids[i], cfg.word_dropout, job.rng) for i in idx],
                   tok.context_length).to(job.groups.device)
    img = model.vision_head.forward_pooled(job.features.pooled(idx, model.vision_head))
    loss = clip_loss(img, model.text_encoder(ids), model.logit_scale, job.groups[idx])
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
    job.step += 1
    return loss.item()


def _epoch(job: _Job, epoch: int, on_step: Callable[[int, float], None] | None) -> bool:
    """Train epoch ``epoch`` (from where a mid-epoch checkpoint left it); False when a signal stopped it."""
    cfg, n = job.cfg, len(job.word_ids)
    job.model.train()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
    batches = [order[i:i + cfg.batch_size] for i in range(0, job.steps_per_epoch * cfg.batch_size, cfg.batch_size)]
    done = job.step - epoch * job.steps_per_epoch  # > 0 after a mid-epoch resume
    bar = progress(batches[done:], enabled=cfg.progress, desc=f"align epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   leave=False)
    for idx in bar:
        job.epoch_losses.append(_step(job, idx))
        if on_step is not None:
            on_step(job.step, job.epoch_losses[-1])
        bar.set_postfix(loss=f"{job.epoch_losses[-1]:.3f}")
        if job.stops is not None and job.stops.reason and job.step < (epoch + 1) * job.steps_per_epoch:
            bar.close()
            return False
    return True


def _end_of_epoch(job: _Job, epoch: int, metrics: MetricsLog) -> None:
    model = job.model
    record: dict[str, Any] = {"step": job.step, "epoch": epoch + 1, "loss": float(np.mean(job.epoch_losses)),
                              "lr": job.optimizer.param_groups[0]["lr"], "logit_scale": model.scale}
    if job.features.cached and job.features.classes is not None:
        record["zeroshot_acc"] = cached_zeroshot(model, job.features, job.features.classes)
    job.epoch_losses = []
    metrics.write(record)  # a no-op without a run directory
    _checkpoint(job, epoch + 1)
    logger.info("align epoch %d/%d: %s", epoch + 1, job.cfg.epochs, record)
    model.history.append(record)


def _train(job: _Job, on_step: Callable[[int, float], None] | None) -> str | None:
    """The epochs left; returns the signal that stopped the run (a checkpoint saved), or None."""
    from ..runtime.loop import resumable_loop

    with resumable_loop(job.run_dir, job.step, _resume_command(job.run_dir), say) as (metrics, stops):
        job.stops = stops
        for epoch in range(job.start_epoch, job.cfg.epochs):
            if not _epoch(job, epoch, on_step):
                _checkpoint(job, epoch)  # mid-epoch: the partial epoch's losses go with it
                return job.stops.reason
            _end_of_epoch(job, epoch, metrics)
            if job.stops.reason and epoch + 1 < job.cfg.epochs:
                return job.stops.reason
    return None


def _resume_command(run_dir: Path | None) -> str:
    return f"dinolab align --resume --out {run_dir}"


def _finish(job: _Job, stopped: str | None) -> AlignedModel:
    model = job.model
    model.eval()
    if state_fingerprint(job.backbone) != job.fingerprint:  # a bug, never a user error: the backbone must not move
        raise RuntimeError("the frozen backbone changed during alignment")
    if job.run_dir is not None and stopped is None:
        if job.skipped:
            write_skipped_log(job.run_dir, job.skipped)
        save_aligned(model, job.run_dir, backbone_path=job.backbone_path, copy_backbone=job.cfg.copy_backbone,
                     metadata={"training": job.hyper})
    if stopped:
        say(f"stopped by {stopped} at step {job.step}; checkpoint saved. Continue with: "
            f"{_resume_command(job.run_dir)}")
    model.skipped = job.skipped
    model.stopped_by = stopped
    return model


# ------------------------------------------------------------------------------------------------


def _drop_words(ids: list[int], p: float, rng: random.Random) -> list[int]:
    if p <= 0 or len(ids) <= 1:
        return ids
    kept = [i for i in ids if rng.random() >= p]
    return kept or [ids[rng.randrange(len(ids))]]


def _param_groups(model: AlignedModel, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, embeddings' positions or the logit scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "pos_embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _heads_for(backbone: nn.Module) -> int:
    heads = getattr(backbone, "num_heads", 4)
    return heads if backbone.embed_dim % heads == 0 else 1
