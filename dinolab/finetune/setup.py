"""Everything a fine-tuning run needs before its first step: backbone, data, model, optimizer, loss terms.

The order of the random draws is fixed (the split, then the head's initialisation, then LoRA's),
so a resumed run rebuilds the same model before loading its checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..runtime.messages import say
from .config import DEFAULT_EPOCHS, FinetuneConfig
from .data import Images, decode_all, labelled_dataset, stratified_split


def load_backbone(weights: Any, cfg: FinetuneConfig) -> nn.Module:
    """The backbone to fine-tune: a copy of a module, or ``load_model(weights)`` (drop-path set in full mode)."""
    from ..models.weights import load_model

    full = cfg.kind()[0] == "full"
    if isinstance(weights, nn.Module):
        backbone = copy.deepcopy(weights)
        if full and cfg.drop_path > 0:
            say("note: drop_path applies only to backbones read from a file; the given module keeps its own")
        return backbone.float()
    extra = {"drop_path_rate": cfg.drop_path} if full and cfg.drop_path > 0 else {}
    return load_model(weights, **extra)


def _val_classes(train_classes: list[str], val_ds: Any, where: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(train_classes)}
    missing = [c for c in val_ds.classes if c not in index]
    if missing:
        raise DataError(f"--val {where} has classes the training data lacks: {', '.join(missing[:5])}; add training "
                        f"images of them or remove them from the validation data")
    return np.array([index[c] for c in val_ds.classes], dtype=np.int64)[val_ds.labels]


def split_data(cfg: FinetuneConfig) -> tuple[Any, np.ndarray, Any, np.ndarray, np.ndarray, int]:
    """``(train_ds, train_idx, val_ds, val_idx, val_labels, held_out)`` in the training data's class indices."""
    ds = labelled_dataset(cfg.train_data)
    if cfg.val is not None:
        val_ds = labelled_dataset(cfg.val)
        return ds, np.arange(len(ds)), val_ds, np.arange(len(val_ds)), _val_classes(ds.classes, val_ds, cfg.val), 0
    tr, va, single = stratified_split(ds.labels, cfg.val_fraction, cfg.seed)
    if single:
        say(f"warning: class(es) {', '.join(ds.classes[c] for c in single)} have 1 image: kept for training, not "
            f"validated (give --val, or add images)")
    if len(va) == 0:
        raise DataError(f"{cfg.train_data}: no class has 2 images, so none can be held out for validation; give --val")
    say(f"no --val: held out {len(va)} of {len(ds)} images ({cfg.val_fraction:.0%} of each class with 2 or more) "
        f"for validation")
    return ds, tr, ds, va, ds.labels[va], len(va)


def decode_splits(cfg: FinetuneConfig, pp: Any) -> tuple[Any, Images, Images, int, list]:
    """Decode the training images (larger, for random crops) and the validation ones (as the model sees)."""
    from ..data.badfiles import BadFileLog

    ds, tr, val_ds, va, val_labels, held_out = split_data(cfg)
    load_pp = pp
    if cfg.crop:  # crop from a square a little larger than the model's input, as Resize(256) for 224 px
        side = round(pp.image_size / pp.crop_fraction) if pp.resize == "crop" else pp.image_size
        load_pp = pp.replace(image_size=side, crop_fraction=1.0)
    kw = {"num_workers": cfg.workers(), "progress": cfg.progress}
    train = decode_all(ds, tr, ds.labels[tr], load_pp, desc="decoding training images", **kw)
    val = decode_all(val_ds, va, val_labels, pp, desc="decoding validation images", **kw)
    log = BadFileLog(cfg.max_bad_fraction, config_key="max_bad_fraction", min_seen=1)
    log.add(train.bad + val.bad)
    if log.count:
        say(f"skipped {log.count} unreadable image(s): " + "; ".join(f"{p} ({r})" for p, r in log.items))
    log.check(len(tr) + len(va), total=len(tr) + len(va))
    counts = np.bincount(train.labels.numpy(), minlength=len(ds.classes))
    empty = [ds.classes[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"{cfg.train_data}: class(es) {', '.join(empty[:5])} have no readable training image")
    if len(val) == 0:
        raise DataError("no readable validation image; give --val with readable images")
    return ds, train, val, held_out, log.items


def build_model(backbone: nn.Module, cfg: FinetuneConfig, classes: list[str], pp: Any) -> Any:
    """The :class:`Classifier` to train: mode's trainable parts, a fresh head (normal std 0.01, zero bias)."""
    from .classifier import Classifier, feature_dim
    from .modes import set_trainable

    kind, n_last = cfg.kind()
    torch.manual_seed(cfg.seed)
    head = nn.Linear(feature_dim(backbone.embed_dim, cfg.feature, cfg.n_blocks), len(classes))
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    set_trainable(backbone, kind, n_last, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    return Classifier(backbone, head, classes, preprocess=pp, feature=cfg.feature, n_blocks=cfg.n_blocks)


@torch.no_grad()
def frozen_features(model: Any, images: Images, device: torch.device, precision: str, progress: bool) -> torch.Tensor:
    """``(N, F)`` float32 features of ``images`` (already at the model's input size) from the frozen backbone."""
    from ..device import autocast
    from ..runtime.messages import progress as bar

    model.eval()
    out = []
    for i in bar(range(0, len(images), 64), enabled=progress, desc="features", leave=False):
        x = model.preprocess.normalize(images.pixels[i:i + 64].to(device))
        with autocast(device, precision):
            out.append(model.features(x).float())
    return torch.cat(out) if out else torch.zeros(0, model.head.in_features, device=device)


def loss_terms(cfg: FinetuneConfig, counts: np.ndarray, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(class_weights or None, log_prior)`` of the training counts, on ``device``."""
    from .imbalance import class_weights, log_priors

    w = class_weights(cfg.loss_weights, counts, cfg.beta)
    weights = None if w is None else torch.tensor(w, dtype=torch.float32, device=device)
    return weights, torch.tensor(log_priors(counts), dtype=torch.float32, device=device)


def build_job(weights: Any, cfg: FinetuneConfig, run_dir: Path) -> Any:
    from ..device import resolve_device, resolve_precision
    from .modes import optimizer_groups
    from .trainer import Job

    backbone = load_backbone(weights, cfg)
    dev = resolve_device(cfg.device)
    prec = resolve_precision(cfg.precision, dev)
    pp = cfg.inference_options().preprocess_for(backbone, announce="finetune" if cfg.progress else None)
    ds, train, val, held_out, bad = decode_splits(cfg, pp)
    classes = list(ds.classes)
    model = build_model(backbone, cfg, classes, pp).to(dev)
    kind = cfg.kind()[0]
    groups = optimizer_groups(model.backbone, model.head, lr=cfg.peak_lr(), head_lr=cfg.head_lr,
                              weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay if kind == "full" else 1.0)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    counts = np.bincount(train.labels.numpy(), minlength=len(classes))
    class_w, log_prior = loss_terms(cfg, counts, dev)
    steps = -(-len(train) // cfg.batch_size)
    epochs = cfg.epochs_for(steps)
    if cfg.epochs is None:
        say(f"{epochs} epochs of {steps} steps ({len(train)} training images, batch {cfg.batch_size}): "
            f"{DEFAULT_EPOCHS} epochs or at least min_steps={cfg.min_steps} steps (set epochs=N to choose)")
    total = epochs * steps
    fingerprint = {"classes": classes, "n_train": len(train), "n_val": len(val), "mode": cfg.mode,
                   "feature": cfg.feature, "n_blocks": cfg.n_blocks}
    job = Job(cfg=cfg, run_dir=run_dir, model=model, classes=classes, train=train, val=val, counts=counts,
              held_out=held_out, optimizer=optimizer, device=dev, precision=prec, class_weights=class_w,
              log_prior=log_prior, epochs=epochs, steps_per_epoch=steps, total_steps=total,
              warmup=min(int(round(cfg.warmup_epochs * steps)), total - 1), fingerprint=fingerprint, bad=bad)
    if kind == "head":
        job.val_features = frozen_features(model, val, dev, prec, cfg.progress)
        if not (cfg.crop or cfg.flip):
            job.train_features = frozen_features(model, train, dev, prec, cfg.progress)
    if prec == "fp16":
        job.scaler = torch.amp.GradScaler(dev.type)
    return job
