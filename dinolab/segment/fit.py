"""Fit a segmentation head on a frozen backbone: :func:`fit` (the linear head's loop and the run folder).

The run folder ``out`` (HEAD) is a :class:`~dinolab.runtime.run_dir.RunDirectory` (locked, refused when it
holds files unless ``force``, untouched until the start is accepted), as :func:`dinolab.text.align` does:
``config.yaml``, ``metrics.jsonl`` (loss and lr every ``checkpoint_every`` steps), ``checkpoint.pt``
(atomic, the previous one kept; also written when SIGTERM / Ctrl-C stop the run after the current step,
and ``resume=True`` continues from it), then the head files of :mod:`dinolab.segment.head` and
``skipped.log`` when images or masks could not be read.

``head="linear"``: each step draws ``batch_size`` images, cuts one augmented crop from each
(:mod:`.augment`), runs the frozen backbone, upsamples the head's logits bilinearly to the crop and takes
the cross-entropy over the pixels whose label is not 255. ``head="logreg"``: :mod:`.logreg`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, DinolabError
from ..eval.dense import patch_tokens
from ..runtime.checkpoint import capture_rng_state, restore_rng_state, resume_state, save_checkpoint
from ..runtime.config_loader import check_fields, to_yaml
from ..runtime.messages import progress, say
from ..runtime.metrics_log import METRICS_NAME, MetricsLog
from ..runtime.run_dir import SKIPPED_LOG, RunDirectory, write_skipped_log
from .augment import random_crop_pair
from .config import CONFIG_NAME, SEGMENT_SCHEMA, SegmentConfig
from .data import SegmentationData, count_classes, load_segmentation_data
from .head import BACKBONE_FILE, CONFIG_FILE, HEAD_FILE, SegmentationHead, Segmenter, save_segmenter
from .masks import IGNORE

_RUN_FILES = ("checkpoint.pt", "checkpoint.prev.pt", METRICS_NAME, SKIPPED_LOG, CONFIG_FILE, HEAD_FILE,
              BACKBONE_FILE, "backbone.json")


def fit(weights_or_model: str | os.PathLike | nn.Module, images: Any = None, masks: str | None = None, *,
        out: str | os.PathLike | None = None, config: SegmentConfig | None = None, force: bool = False,
        resume: bool = False, **options: Any) -> Segmenter:
    """Fit a head on ``images`` / ``masks``; returns the :class:`Segmenter` (``history``, ``skipped``, ``stopped_by``).

    Examples:
        >>> import dinolab
        >>> bb = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1, embed_dim=32, num_heads=2)
        >>> seg = fit(bb, "builtin:shapes?n=6&size=32", head="logreg", image_size=32, purity=0.9, device="cpu",
        ...           progress=False)
        >>> seg.classes[:2], seg.head.kind
        (['background', 'circle'], 'logreg')
    """
    cfg = copy.deepcopy(config) if config is not None else SegmentConfig()
    SEGMENT_SCHEMA.merge(cfg, options, where=" (keyword argument)")
    cfg.images = str(images) if images is not None else cfg.images
    cfg.masks = str(masks) if masks is not None else cfg.masks
    if not isinstance(weights_or_model, nn.Module):
        cfg.weights = str(weights_or_model)
    check_fields(cfg)
    if cfg.images is None:
        raise ConfigError("fit needs images (a folder with --masks, or builtin:shapes)")
    if cfg.scale_min > cfg.scale_max:
        raise ConfigError(f"scale_min={cfg.scale_min} is above scale_max={cfg.scale_max}")
    if resume and (force or out is None or cfg.head == "logreg"):
        raise ConfigError("--resume continues a linear head's run in --out from its checkpoint; it does not go with "
                          "--force or --head logreg (which fits in one go)")
    run = None
    if out is not None:
        run = RunDirectory(out, files=_RUN_FILES, config_name=CONFIG_NAME, command="dinolab segment fit")
        run.open(resume=resume, force=force)
    try:
        job = _prepare(weights_or_model, cfg, Path(out) if out is not None else None, resume)
        if run is not None:
            run.commit(to_yaml(cfg))
    except BaseException:
        if run is not None:
            run.abandon()
        raise
    try:
        if cfg.head == "logreg":
            from .logreg import fit_logreg

            job.history.append({"step": 0, **fit_logreg(job.seg, job.pairs, cfg, job.device, job.precision)})
            if job.run_dir is not None:
                with contextlib.closing(MetricsLog(job.run_dir / METRICS_NAME)) as metrics:
                    metrics.write(job.history[-1])
            stopped = None
        else:
            stopped = _train(job)
    finally:
        if run is not None:
            run.close()
    return _finish(job, stopped)


@dataclass
class _Job:
    cfg: SegmentConfig
    run_dir: Path | None
    seg: Segmenter
    pairs: list[tuple[torch.Tensor, np.ndarray]]  # the readable (image, mask) pairs, in memory
    skipped: list[tuple[str, str]]
    device: torch.device
    precision: str
    backbone_path: Path | None
    optimizer: torch.optim.Optimizer | None = None
    rng: np.random.Generator | None = None
    step: int = 0
    history: list[dict[str, Any]] | None = None


def _prepare(weights_or_model: Any, cfg: SegmentConfig, run_dir: Path | None, resume: bool) -> _Job:
    """Backbone, data, head and optimizer; restored from the checkpoint on resume."""
    from ..device import resolve_device, resolve_precision
    from ..eval.dense import dense_image_size
    from ..eval.options import InferenceOptions
    from ..models.weights import load_model
    from ..text.aligned import state_fingerprint

    backbone = weights_or_model if isinstance(weights_or_model, nn.Module) else load_model(weights_or_model)
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
    backbone.requires_grad_(False).eval().to(dev)
    data = load_segmentation_data(cfg.images, cfg.masks)
    names = cfg.class_names() or data.classes
    k = count_classes(data) if names is None else len(names)
    names = names or [str(i) for i in range(k)]
    pairs = [(image, mask) for _, image, mask in data.readable()]
    if not pairs:
        raise DataError(f"none of the {len(data)} image/mask pairs of {data.source} could be read "
                        f"(e.g. {data.bad[0][0]}: {data.bad[0][1]})")
    _check_labels(pairs, k, data)
    size = cfg.image_size or dense_image_size(backbone)
    pp = InferenceOptions(image_size=size, mean=cfg.mean, std=cfg.std).preprocess_for(
        backbone, announce="segment fit" if cfg.progress else None)
    torch.manual_seed(cfg.seed)
    head = SegmentationHead(backbone.embed_dim * cfg.layers, k, cfg.head).to(dev)
    if cfg.layers > backbone.depth:
        raise ConfigError(f"layers={cfg.layers} is more than the backbone's {backbone.depth} blocks")
    seg = Segmenter(backbone, head, names, cfg.layers, size, pp, state_fingerprint(backbone))
    job = _Job(cfg, run_dir, seg, pairs, list(data.bad), dev, prec,
               None if isinstance(weights_or_model, nn.Module) else Path(weights_or_model), history=[])
    if cfg.head == "linear":
        job.optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        job.rng = np.random.default_rng(cfg.seed)
    state = resume_state(run_dir) if resume else None
    if state is not None:
        if state.get("backbone_fingerprint") != seg.fingerprint:
            raise DinolabError(f"the checkpoint in {run_dir} was fitted on another backbone; resume with the same "
                               f"WEIGHTS, or start over with --force")
        head.load_state_dict(state["head"])
        job.optimizer.load_state_dict(state["optimizer"])
        job.step = int(state["iteration"])
        job.rng.bit_generator.state = state["aug_rng"]
        restore_rng_state(state["rng"])
    return job


def _check_labels(pairs: list, k: int, data: SegmentationData) -> None:
    top = max(int(m[m != IGNORE].max(initial=-1)) for _, m in pairs)
    if top >= k:
        raise DataError(f"the masks of {data.source} hold class {top}, but only {k} class names were given")


def _batch(job: _Job) -> tuple[torch.Tensor, torch.Tensor]:
    cfg, crop = job.cfg, job.seg.image_size // job.seg.backbone.patch_size * job.seg.backbone.patch_size
    picks = job.rng.integers(0, len(job.pairs), size=cfg.batch_size)
    crops = [random_crop_pair(*job.pairs[i], max(crop, job.seg.backbone.patch_size), (cfg.scale_min, cfg.scale_max),
                              cfg.flip, job.rng) for i in picks]
    images = torch.stack([c[0] for c in crops]).to(job.device)
    return job.seg.preprocess.normalize(images), torch.stack([c[1] for c in crops]).to(job.device)


def _step(job: _Job) -> float:
    from ..device import autocast
    from ..runtime.schedules import cosine_schedule

    cfg = job.cfg
    for g in job.optimizer.param_groups:
        g["lr"] = cosine_schedule(job.step, cfg.lr, cfg.lr / 100, cfg.steps, 0)
    x, target = _batch(job)
    with torch.no_grad(), autocast(job.device, job.precision):
        tokens = patch_tokens(job.seg.backbone, x, cfg.layers).float()
    logits = F.interpolate(job.seg.head(tokens), size=target.shape[-2:], mode="bilinear", align_corners=False)
    if bool((target != IGNORE).any()):
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE)
    else:  # every pixel of these crops is ignored: no gradient to take
        loss = logits.sum() * 0.0
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    job.step += 1
    return loss.item()


def _checkpoint(job: _Job) -> None:
    if job.run_dir is not None:
        save_checkpoint(job.run_dir, {"iteration": job.step, "head": job.seg.head.state_dict(),
                                      "optimizer": job.optimizer.state_dict(), "aug_rng": job.rng.bit_generator.state,
                                      "backbone_fingerprint": job.seg.fingerprint, "rng": capture_rng_state()})


def _train(job: _Job) -> str | None:
    """The steps left; returns the signal that stopped the run (a checkpoint saved), or None."""
    from ..runtime.loop import resumable_loop

    cfg = job.cfg
    job.seg.head.train()
    losses: list[float] = []
    bar = progress(range(job.step, cfg.steps), enabled=cfg.progress, desc="segment fit", unit="step")
    with resumable_loop(job.run_dir, job.step, _resume_command(job.run_dir), say) as (metrics, stops):
        for _ in bar:
            losses.append(_step(job))
            if job.step % cfg.checkpoint_every == 0 or job.step == cfg.steps:
                record = {"step": job.step, "loss": float(np.mean(losses)), "lr": job.optimizer.param_groups[0]["lr"]}
                losses = []
                job.history.append(record)
                metrics.write(record)  # a no-op without a run directory
                _checkpoint(job)
            if stops.reason and job.step < cfg.steps:
                _checkpoint(job)
                return stops.reason
    return None


def _resume_command(run_dir: Path | None) -> str:
    return f"dinolab segment fit --resume --out {run_dir}"


def _finish(job: _Job, stopped: str | None) -> Segmenter:
    seg = job.seg
    seg.eval()
    if job.run_dir is not None and stopped is None:
        if job.skipped:
            write_skipped_log(job.run_dir, job.skipped)
        save_segmenter(seg, job.run_dir, backbone_path=job.backbone_path,
                       metadata={"training": {"head": job.cfg.head, "images": job.cfg.images, "steps": job.step,
                                              "pairs": len(job.pairs)}})
    if stopped:
        say(f"stopped by {stopped} at step {job.step}; checkpoint saved. Continue with: "
            f"{_resume_command(job.run_dir)}")
    seg.history, seg.skipped, seg.stopped_by = job.history, job.skipped, stopped
    return seg
