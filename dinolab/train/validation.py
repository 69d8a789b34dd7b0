"""Cross-field validation of the training config: :func:`validate`.

The loader (:mod:`dinolab.runtime.config_loader`) already checked every key, type and declared
range; these checks compare one value with another (a crop size against the patch size, a batch
against the number of processes, a Gram teacher against the distillation teacher, ...) and name
the key and the fix. Settings that work but are probably not meant come back as warnings.

Examples:
    >>> from dinolab.train.config import load_config
    >>> validate(load_config("default", ["crops.global_crops_size=30"]))
    Traceback (most recent call last):
    ...
    dinolab.errors.ConfigError: crops.global_crops_size=30 is not a multiple of model.patch_size=8; use e.g. ...
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ConfigError
from ..runtime.config_loader import check_fields

if TYPE_CHECKING:
    from .config import Config


def _check_options(key: str, options: dict[str, Any], module: str, name: str, exclude: Sequence[str]) -> None:
    """Keys of a free-form ``options`` mapping must be keyword arguments of ``module.name``."""
    import importlib
    import inspect

    target = getattr(importlib.import_module(module), name)
    allowed = [p for p in inspect.signature(target.__init__).parameters if p not in ("self", *exclude)]
    for option in options:
        if option in exclude:
            raise ConfigError(f"{key}.{option} has its own key; set it there instead of in {key}")
        if option not in allowed:
            close = difflib.get_close_matches(option, allowed, n=1)
            hint = f"did you mean {key}.{close[0]}? " if close else ""
            raise ConfigError(f"unknown option {key}.{option}; {hint}{name} accepts: {', '.join(allowed)}")


def validate(config: Config, world_size: int = 1) -> list[str]:
    """Reject impossible settings (``ConfigError`` naming the key and the fix); return warnings.

    The ranges declared with the fields are checked first (for configs built in code; plugin
    sections included), then the
    combinations, section by section; ``world_size`` is the number of processes of the run.
    """
    check_fields(config)
    c, warnings = config, []
    _validate_train(c, world_size)
    patch = _validate_crops_and_data(c)
    _validate_objectives(c, patch)
    _validate_highres(c, patch, _need, warnings)
    warnings += _validate_distill(c, _need)
    _validate_schedules(c, warnings)
    _validate_eval(c, patch)
    return warnings


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate_train(c: Config, world_size: int) -> None:
    need = _need
    need(c.data.source is not None, "data.source is not set; give the training images, e.g. data.source=path/to/images "
                                    "(a folder, a class-per-subfolder folder, a .txt list, or builtin:digits)")
    t = c.train
    need(t.epochs >= 1, f"train.epochs={t.epochs} must be at least 1")
    need(t.accumulate >= 1, f"train.accumulate={t.accumulate} must be at least 1")
    need(t.batch_size >= world_size, f"train.batch_size={t.batch_size} is smaller than the number of processes "
                                     f"({world_size}); every process needs at least one image: raise train.batch_size")
    need(t.batch_size % (world_size * t.accumulate) == 0,
         f"train.batch_size={t.batch_size} must be divisible by processes x train.accumulate "
         f"({world_size} x {t.accumulate}); set train.batch_size to a multiple of {world_size * t.accumulate}")
    need(t.epoch_length is None or t.epoch_length >= 1, f"train.epoch_length={t.epoch_length} must be at least 1")
    need(t.max_nonfinite_steps >= 1, f"train.max_nonfinite_steps={t.max_nonfinite_steps} must be at least 1")
    need(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0")
    if t.distributed == "fsdp" and world_size > 1:
        need(t.precision != "fp16", "train.distributed=fsdp does not support train.precision=fp16 (no sharded "
                                    "gradient scaler); use train.precision=bf16 or fp32")
        need(c.distill.teacher is None and c.gram.loss_weight == 0,
             "train.distributed=fsdp does not support distill.teacher or Gram anchoring yet (their extra frozen "
             "models are not sharded); use train.distributed=ddp")



def _validate_crops_and_data(c: Config) -> int | None:
    """The crops against the patch size, the data section; returns the patch size (None: unknown)."""
    need, cr, m = _need, c.crops, c.model
    from ..models.presets import preset_config

    arch_patch = preset_config(m.arch).get("patch_size")  # also rejects an unknown arch, suggesting the closest
    patch = m.patch_size if m.patch_size is not None else arch_patch
    if patch is not None:
        need(patch >= 1, f"model.patch_size={patch} must be positive")
        for key in ("global_crops_size", "local_crops_size"):
            size = getattr(cr, key)
            if key == "local_crops_size" and cr.local_crops_number == 0:
                continue
            need(size % patch == 0 and size >= patch,
                 f"crops.{key}={size} is not a multiple of model.patch_size={patch}; use e.g. "
                 f"crops.{key}={max(patch, size // patch * patch)}")
    _check_options("model.options", m.options, "dinolab.models.vit", "VisionTransformer",
                   exclude=("patch_size", "embed_dim", "depth", "num_heads", "drop_path_rate",
                            "drop_path_uniform"))
    _check_options("crops.options", cr.options, "dinolab.data.multicrop", "MultiCrop",
                   exclude=("global_size", "local_size", "n_local", "global_scale", "local_scale", "gram_size"))
    need(cr.local_crops_number >= 0, f"crops.local_crops_number={cr.local_crops_number} must be >= 0")
    need(cr.local_crops_number == 0 or cr.local_crops_size <= cr.global_crops_size,
         f"crops.local_crops_size={cr.local_crops_size} is larger than crops.global_crops_size="
         f"{cr.global_crops_size}; local crops are the small views: lower crops.local_crops_size")
    for key in ("global_crops_scale", "local_crops_scale"):
        lo, hi = getattr(cr, key)
        need(0 < lo <= hi <= 1, f"crops.{key}={[lo, hi]} must satisfy 0 < min <= max <= 1")
    if c.data.load_size is not None:
        need(c.data.load_size >= cr.global_crops_size,
             f"data.load_size={c.data.load_size} is smaller than crops.global_crops_size={cr.global_crops_size}: "
             f"every crop would be cut from an image smaller than itself; raise data.load_size to at least "
             f"{cr.global_crops_size} or leave it unset (2 x the global crop size)")
    mp = c.data.max_pixels
    need(mp is None or mp >= cr.global_crops_size ** 2,
         f"data.max_pixels={mp} is smaller than one global crop (crops.global_crops_size={cr.global_crops_size}, "
         f"{cr.global_crops_size ** 2} pixels); raise data.max_pixels or set it to null (no limit)")
    need(c.data.max_aspect >= 1, f"data.max_aspect={c.data.max_aspect} must be at least 1 (longer side / shorter "
                                 f"side; default 2.0)")
    need(c.data.num_workers is None or c.data.num_workers >= 0,
         f"data.num_workers={c.data.num_workers} must be 0 (decode in the main process) or more")
    need(0 <= c.data.max_bad_fraction <= 1, f"data.max_bad_fraction={c.data.max_bad_fraction} must be in [0, 1]")
    need(0 <= c.data.val_fraction < 1, f"data.val_fraction={c.data.val_fraction} must be in [0, 1)")

    return patch


def _validate_objectives(c: Config, patch: int | None) -> None:
    need = _need
    d = c.dino
    need(d.out_dim >= 1, f"dino.out_dim={d.out_dim} must be positive")
    need(d.student_temp > 0, f"dino.student_temp={d.student_temp} must be positive")
    need(0 <= d.center_momentum < 1, f"dino.center_momentum={d.center_momentum} must be in [0, 1)")
    need(d.head_nlayers >= 1, f"dino.head_nlayers={d.head_nlayers} must be at least 1")
    need(d.loss_weight > 0, f"dino.loss_weight={d.loss_weight}: the DINO objective is the training signal of "
                            f"this trainer; keep a positive weight")
    need(c.ibot.loss_weight >= 0 and c.koleo.loss_weight >= 0, "ibot.loss_weight and koleo.loss_weight must be >= 0")
    need(0 <= c.ibot.mask_sample_probability <= 1,
         f"ibot.mask_sample_probability={c.ibot.mask_sample_probability} must be in [0, 1] (DINOv2: 0.5)")
    lo, hi = c.ibot.mask_ratio_min_max
    need(0 <= lo <= hi <= 1, f"ibot.mask_ratio_min_max={[lo, hi]} must satisfy 0 <= min <= max <= 1 (DINOv2: [0.1, 0.5])")
    need(c.ibot.out_dim is None or c.ibot.out_dim >= 1, f"ibot.out_dim={c.ibot.out_dim} must be positive")
    _validate_gram(c, patch, need)



def _validate_schedules(c: Config, warnings: list[str]) -> None:
    need, t, o = _need, c.train, c.optim
    te = c.teacher
    need(te.teacher_temp > 0 and te.warmup_teacher_temp > 0, "teacher.teacher_temp and teacher.warmup_teacher_temp "
                                                             "must be positive")
    need(0 <= te.momentum_teacher <= 1 and 0 <= te.final_momentum_teacher <= 1,
         "teacher.momentum_teacher and teacher.final_momentum_teacher must be in [0, 1]")
    need(te.warmup_teacher_temp_epochs >= 0, f"teacher.warmup_teacher_temp_epochs={te.warmup_teacher_temp_epochs} "
                                             f"must be >= 0")
    if te.warmup_teacher_temp_epochs > t.epochs:
        warnings.append(f"teacher.warmup_teacher_temp_epochs={te.warmup_teacher_temp_epochs} is longer than "
                        f"train.epochs={t.epochs}: the teacher temperature never reaches teacher.teacher_temp")
    for key in ("teacher_temp", "warmup_teacher_temp"):
        value = getattr(te, key)
        if value > 0.1:
            warnings.append(f"teacher.{key}={value} is above 0.1; the DINO authors found values above 0.07 "
                            f"unstable (risk of collapse): try 0.04-0.07")

    need(o.lr >= 0 and o.min_lr >= 0, "optim.lr and optim.min_lr must be >= 0")
    need(o.warmup_epochs >= 0, f"optim.warmup_epochs={o.warmup_epochs} must be >= 0")
    if o.warmup_epochs > t.epochs:
        warnings.append(f"optim.warmup_epochs={o.warmup_epochs} is longer than train.epochs={t.epochs}: the "
                        f"learning rate never reaches its peak")
    need(o.freeze_last_layer_epochs >= 0, f"optim.freeze_last_layer_epochs={o.freeze_last_layer_epochs} must be >= 0")
    need(o.clip_grad >= 0, f"optim.clip_grad={o.clip_grad} must be >= 0 (0 disables clipping)")
    need(0 < o.layerwise_decay <= 1, f"optim.layerwise_decay={o.layerwise_decay} must be in (0, 1]")
    need(o.patch_embed_lr_mult >= 0, f"optim.patch_embed_lr_mult={o.patch_embed_lr_mult} must be >= 0")



def _validate_eval(c: Config, patch: int | None) -> None:
    need = _need
    e = c.eval
    need(e.knn_every >= -1, f"eval.knn_every={e.knn_every} must be >= -1 (-1 never, 0 only at the end)")
    need(all(k >= 1 for k in e.knn_k) and len(e.knn_k) > 0, f"eval.knn_k={e.knn_k} must list positive integers")
    need(e.image_size is None or patch is None or e.image_size % patch == 0,
         f"eval.image_size={e.image_size} is not a multiple of model.patch_size={patch}")
    need(c.monitor.collapse_patience >= 1, f"monitor.collapse_patience={c.monitor.collapse_patience} must be >= 1")


def _validate_gram(c: Config, patch: int | None, need: Any) -> None:
    g = c.gram
    need(g.loss_weight >= 0, f"gram.loss_weight={g.loss_weight} must be >= 0 (0 disables Gram anchoring; DINOv3: 2.0)")
    if g.loss_weight == 0:
        return
    for key in ("start_iteration", "snapshot_iteration", "first_refresh", "max_refreshes", "img_size"):
        value = getattr(g, key)
        need(value is None or value >= 0, f"gram.{key}={value} must be >= 0 or null")
    need(g.start_epoch >= 0 and g.warmup_iterations >= 0 and g.refresh_every >= 0,
         f"gram.start_epoch={g.start_epoch}, gram.warmup_iterations={g.warmup_iterations} and "
         f"gram.refresh_every={g.refresh_every} must be >= 0")
    if g.snapshot_iteration is not None and g.start_iteration is not None:
        need(g.snapshot_iteration <= g.start_iteration,
             f"gram.snapshot_iteration={g.snapshot_iteration} is after gram.start_iteration={g.start_iteration}: the "
             f"Gram teacher must exist when the loss starts; lower gram.snapshot_iteration or leave it null")
    need(g.teacher is None or g.snapshot_iteration is None,
         "gram.teacher (a weights file) and gram.snapshot_iteration (a copy of the EMA teacher) both choose the "
         "initial Gram teacher; set only one")
    need(not (g.remove_neg and g.remove_only_teacher_neg),
         "gram.remove_neg and gram.remove_only_teacher_neg are exclusive; set at most one to true")
    if g.img_size is not None and patch is not None:
        need(g.img_size >= patch and g.img_size % patch == 0,
             f"gram.img_size={g.img_size} is not a multiple of model.patch_size={patch}; use e.g. "
             f"gram.img_size={max(patch, g.img_size // patch * patch)} (DINOv3: 2x crops.global_crops_size)")


def _validate_highres(c: Config, patch: int | None, need: Any, warnings: list[str]) -> None:
    h = c.crops.highres
    if h.start_epoch is None:
        return
    need(h.start_epoch >= 0, f"crops.highres.start_epoch={h.start_epoch} must be >= 0 (null: no high-resolution phase)")
    if h.start_epoch >= c.train.epochs:
        warnings.append(f"crops.highres.start_epoch={h.start_epoch} is not before train.epochs={c.train.epochs}: the "
                        f"high-resolution phase never starts")
    n = len(h.probabilities)
    need(n >= 1 and len(h.global_sizes) == n and len(h.local_sizes) == n
         and (len(h.gram_sizes) == n or c.gram.loss_weight == 0),
         f"crops.highres.global_sizes, local_sizes, gram_sizes and probabilities must have one entry per resolution "
         f"(got {len(h.global_sizes)}, {len(h.local_sizes)}, {len(h.gram_sizes)} and {n})")
    need(all(p >= 0 for p in h.probabilities) and sum(h.probabilities) > 0,
         f"crops.highres.probabilities={h.probabilities} must be >= 0 with a positive sum")
    for g, loc in zip(h.global_sizes, h.local_sizes):
        need(c.crops.local_crops_number == 0 or loc <= g,
             f"crops.highres: local size {loc} is larger than its global size {g}")
    sizes = [("global_sizes", v) for v in h.global_sizes] + [("local_sizes", v) for v in h.local_sizes]
    if c.gram.loss_weight > 0:
        sizes += [("gram_sizes", v) for v in h.gram_sizes]
    for key, v in sizes:  # not necessarily multiples (official 168 at patch 16): the patch embedding drops the rest
        need(v >= max(1, patch or 1), f"crops.highres.{key} has {v}, smaller than one patch (model.patch_size={patch})")


REQUIRED = "???"  # the OmegaConf/Hydra marker of a value the user must give


def _validate_distill(c: Config, need: Any) -> list[str]:
    d = c.distill
    need(d.relation_loss_weight >= 0, f"distill.relation_loss_weight={d.relation_loss_weight} must be >= 0")
    need(d.relation_temp > 0, f"distill.relation_temp={d.relation_temp} must be > 0 (e.g. 0.1)")
    need(d.relation_queue >= 0, f"distill.relation_queue={d.relation_queue} must be >= 0 (0: no queue)")
    if d.teacher is None:
        need(d.relation_loss_weight == 0,
             f"distill.relation_loss_weight={d.relation_loss_weight} needs a frozen teacher whose neighbourhoods "
             f"to match: set distill.teacher=PATH, or distill.relation_loss_weight=0")
        return []
    need(d.teacher != REQUIRED,
         "distill.teacher is required by this config: give the frozen teacher, e.g. train one first with "
         "`dinolab train dinov2_shapes --out runs/teacher`, then add distill.teacher=runs/teacher (the run directory: "
         "backbone and heads) or distill.teacher=runs/teacher/teacher_backbone.safetensors (backbone only); any "
         "file dinolab.load_model reads works (e.g. dinov2_vitg14_pretrain.pth)")
    need(c.gram.loss_weight == 0, f"gram.loss_weight={c.gram.loss_weight} with distill.teacher: Gram anchoring is "
                                  f"not part of distillation (DINOv3 §5.2 distils without it); set gram.loss_weight=0")
    need(d.teacher_crops_size is None or d.teacher_crops_size >= 1,
         f"distill.teacher_crops_size={d.teacher_crops_size} must be positive or null")
    warnings = []
    if c.model.drop_path_rate > 0:
        warnings.append(f"model.drop_path_rate={c.model.drop_path_rate} with distill.teacher: the DINOv2 recipe "
                        f"distils without stochastic depth (model.drop_path_rate=0)")
    if c.ibot.loss_weight > 0 and c.ibot.mask_sample_probability > 0:
        warnings.append(f"ibot.mask_sample_probability={c.ibot.mask_sample_probability} with distill.teacher: the "
                        f"DINOv2 recipe masks nothing and applies iBOT to every patch of the global crops "
                        f"(ibot.mask_sample_probability=0)")
    return warnings
