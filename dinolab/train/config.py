"""Typed training configuration: dataclass defaults, YAML files, dotted ``key=value`` overrides.

The sections follow the DINOv2 code base (``model``, ``data``, ``crops``, ``dino``, ``ibot``,
``koleo``, ``gram``, ``distill``, ``teacher``, ``optim``, ``train``, ``eval``, ``monitor``). The
dataclass defaults are the official DINO v1 ViT-S/16 recipe; a YAML file (or a packaged preset
named without ``.yaml``, see ``dinolab/configs/``) is merged over them, then the command-line
overrides. ``dinolab train`` with no file uses the packaged ``default`` preset (a small ViT on
``builtin:digits``).

Errors name the key, the value and the fix:

- an unknown key suggests the closest valid one (``optim.lr_rate`` -> ``optim.lr``);
- a value of the wrong type names the expected type;
- impossible combinations (crop size not a multiple of the patch size, a local crop larger than
  the global crop, a batch smaller than the number of processes, ...) are rejected by
  :func:`validate` before any data is read.

Examples:
    >>> cfg = load_config("default", ["optim.lr=1e-3", "crops.local_crops_number=4"])
    >>> cfg.optim.lr, cfg.crops.local_crops_number, cfg.data.source
    (0.001, 4, 'builtin:digits')
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ..errors import ConfigError
from ..runtime.config_loader import ConfigSchema, bounded, check_fields, device_name, parse_override, save_config
from ..runtime.config_loader import to_dict, to_yaml
from ..runtime.config_loader import valid_keys as _valid_keys

__all__ = ["Config", "ConfigError", "ConfigSchema", "SCHEMA", "apply_overrides", "config_from_dict", "list_presets",
           "load_config", "merge", "parse_override", "read_yaml", "save_config", "valid_keys", "validate"]

PRESET_PACKAGE = "dinolab.configs"
DEFAULT_PRESET = "default"


@dataclass
class ModelConfig:
    """The backbone (student and teacher share the architecture)."""

    arch: str = "vit_small"  # any name of dinolab.create_model
    patch_size: int | None = None  # None: the arch's
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.1  # student only; the teacher has none
    drop_path_uniform: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # any other VisionTransformer keyword
    pretrained: str | None = None  # initialise both backbones from weights load_model reads


@dataclass
class DataConfig:
    source: str | None = None  # folder, class-per-subfolder folder, .txt list or builtin:...
    root: str | None = None  # root for relative paths of a .txt list
    load_size: int | None = None  # shorter side after decoding; None: 2 x global crop size
    max_aspect: float = 2.0
    max_pixels: int | None = 178_956_970  # larger declared sizes are unreadable (decompression bombs); null: no limit
    num_workers: int | None = None  # None: 0 for built-in sets, else min(8, CPUs)
    max_bad_fraction: float = 0.05  # stop when more than this share of files is unreadable
    val_source: str | None = None  # labelled images for k-NN queries
    val_fraction: float = 0.2  # without val_source, labelled data is split (stratified) for k-NN
    split_seed: int = 0


@dataclass
class HighresConfig:
    """DINOv3's high-resolution adaptation: from ``start_epoch`` on, each iteration draws one
    (global, local, Gram-teacher) crop-size triple with the given probabilities (DINOv3 high-res
    config: 512/112/768 0.3, 768/112/1152 0.3, 768/168/1152 0.3, 768/224/1152 0.05, 768/336/1152 0.05)."""

    start_epoch: float | None = None  # None: no high-resolution phase
    global_sizes: list[int] = field(default_factory=lambda: [512, 768, 768, 768, 768])
    local_sizes: list[int] = field(default_factory=lambda: [112, 112, 168, 224, 336])
    gram_sizes: list[int] = field(default_factory=lambda: [768, 1152, 1152, 1152, 1152])  # used with Gram anchoring
    probabilities: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.3, 0.05, 0.05])


@dataclass
class CropsConfig:
    global_crops_size: int = 224
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_number: int = 8
    local_crops_size: int = 96
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    options: dict[str, Any] = field(default_factory=dict)  # any other MultiCrop keyword (jitter, blur, ...)
    highres: HighresConfig = field(default_factory=HighresConfig)


@dataclass
class DinoConfig:
    loss_weight: float = 1.0
    out_dim: int = 65536  # prototypes K
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    use_bn_in_head: bool = False
    norm_last_layer: bool = True
    head_weight_norm: bool = True  # False: plain Linear prototypes in every head (DINOv3)
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: Literal["softmax", "sinkhorn_knopp"] = "softmax"


@dataclass
class IbotConfig:
    loss_weight: float = 0.0  # > 0 enables the objective
    mask_sample_probability: float = 0.5
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5)
    separate_head: bool = False  # False: the patch tokens go through dino_head (DINOv2 ViT-S/B/L)
    out_dim: int | None = None  # prototypes of a separate head; None: dino.out_dim
    centering: Literal["softmax", "sinkhorn_knopp"] | None = None  # None: as dino.centering
    student_temp: float = 0.1
    center_momentum: float = 0.9


@dataclass
class KoleoConfig:
    loss_weight: float = 0.0


@dataclass
class GramConfig:
    """DINOv3 Gram anchoring (see :mod:`dinolab.train.gram`); iteration counts are 0-based steps."""

    loss_weight: float = 0.0  # > 0 enables the objective (DINOv3: 2.0)
    start_iteration: int | None = None  # weight 0 before this iteration; None: start_epoch
    start_epoch: float = 0.0
    warmup_iterations: int = 0  # cosine ramp of the weight from 0 (DINOv3: 1000)
    teacher: str | None = None  # Gram-teacher weights (any file load_model reads); None: EMA-teacher snapshot
    snapshot_iteration: int | None = None  # EMA teacher copied in after this many steps; None: the start
    refresh_every: int = 0  # steps between copies of the EMA teacher into the Gram teacher (0: never)
    first_refresh: int | None = None  # None: start + refresh_every (DINOv3: 1.01M)
    max_refreshes: int | None = None  # None: unlimited (paper); DINOv3 config: 3
    img_size: int | None = None  # Gram-teacher crops (same boxes, no distortions); None: the global crops
    resize_mode: Literal["bicubic", "bilinear", "nearest", "area"] = "bicubic"  # teacher map -> student grid
    resize_antialias: bool = False
    remove_neg: bool = False
    remove_only_teacher_neg: bool = False


@dataclass
class DistillConfig:
    """Distillation from a frozen teacher (see :mod:`dinolab.train.distill`); off while ``teacher`` is null."""

    teacher: str | None = None  # frozen teacher: weights load_model reads or a run directory; None: EMA teacher
    heads: Literal["auto", "file", "random"] = "auto"  # teacher heads: the source's (file) or frozen random
    teacher_crops_size: int | None = None  # None: the student's patch grid x the teacher's patch size
    relation_loss_weight: float = 0.0  # > 0: the student's CLS neighbourhoods match the teacher's (relation_distill.py)
    relation_temp: float = 0.1  # softmax temperature of both neighbourhood distributions
    relation_queue: int = 0  # earlier crops kept as extra anchors (0: the batch's other crops only)


@dataclass
class TeacherConfig:
    momentum_teacher: float = 0.996
    final_momentum_teacher: float = 1.0
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    temp_schedule: Literal["epoch", "iteration"] = "epoch"  # DINO v1 steps per epoch, DINOv2 per iteration


@dataclass
class OptimConfig:
    optimizer: Literal["adamw"] = "adamw"
    lr: float = bounded(0.0005, ge=0)  # base lr, scaled by scaling_rule with train.batch_size
    scaling_rule: Literal["linear_wrt_256", "sqrt_wrt_1024", "none"] = "linear_wrt_256"
    min_lr: float = bounded(1e-6, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up; DINOv3 keeps the peak lr
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0  # 0 disables
    clip_mode: Literal["per_param", "global"] = "per_param"  # DINO v1 clips each tensor separately
    freeze_last_layer_epochs: float = 1
    layerwise_decay: float = 1.0  # DINOv2: 0.9
    patch_embed_lr_mult: float = 1.0  # DINOv2: 0.2
    decay_tokens: bool = True  # weight-decay cls/pos/register/mask tokens (as DINO v1 and DINOv2)


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 512  # images per optimizer step, over all processes and accumulation steps
    accumulate: int = 1  # micro-batches per optimizer step
    epoch_length: int | None = None  # iterations per epoch; None: one pass over the data
    seed: int = bounded(0, ge=0, le=2**32 - 1)  # numpy's seed range
    device: str = bounded("auto", check=device_name)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = 0  # iterations between checkpoints (0: at the end of each epoch only)
    max_nonfinite_steps: int = 20  # stop after this many non-finite steps in a row
    progress: bool = True
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate the student, or shard it (FSDP2)
    # on CPU, keep freed memory in the process for reuse (glibc; faster steps, more resident memory)
    keep_freed_memory: bool = True


@dataclass
class EvalConfig:
    knn_every: int = 1  # epochs between k-NN evaluations (0: only at the end; -1: never)
    knn_k: list[int] = field(default_factory=lambda: [10, 20])
    knn_temperature: float = 0.07
    image_size: int | None = None  # None: the global crop size
    batch_size: int = 256


@dataclass
class MonitorConfig:
    collapse_patience: int = 100  # steps a collapse signature must last before the warning
    uniform_entropy_ratio: float = 0.95  # teacher entropy above this share of ln K: uniform collapse
    min_prototype_perplexity: float = 2.0  # batch-mean perplexity below this: one-prototype collapse


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    koleo: KoleoConfig = field(default_factory=KoleoConfig)
    gram: GramConfig = field(default_factory=GramConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of YAML-safe values (tuples become lists)."""
        return to_dict(self)

    def to_yaml(self) -> str:
        """Block-style YAML (one key per line, lists inline), readable by :func:`load_config`."""
        return to_yaml(self)


SCHEMA = ConfigSchema(Config, PRESET_PACKAGE, DEFAULT_PRESET, command="dinolab train")


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ``optim.lr``."""
    return _valid_keys(cls, prefix)


def merge(config: Config, values: dict[str, Any], where: str = "") -> Config:
    """Merge a nested dict of values into ``config`` (in place; also returned)."""
    return SCHEMA.merge(config, values, where)


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    return SCHEMA.apply_overrides(config, overrides)


def list_presets() -> list[str]:
    """Names of the packaged presets (``dinolab/configs/*.yaml``)."""
    return SCHEMA.list_presets()


def read_yaml(source: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The dict in a YAML file or packaged preset, and a description of where it came from."""
    return SCHEMA.read_yaml(source)


def load_config(source: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file or preset ``source`` (None: the ``default`` preset), then ``overrides``."""
    return SCHEMA.load(source, overrides)


def config_from_dict(values: dict[str, Any], where: str = "") -> Config:
    """A Config from a (possibly partial) nested dict merged over the defaults."""
    return SCHEMA.from_dict(values, where)


# ------------------------------------------------------------------------------------------------
# impossible combinations


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
    """Reject impossible settings (``ConfigError`` naming the key and the fix); return warnings."""
    check_fields(config)  # the ranges declared with the fields, for configs built in code
    c, warnings = config, []

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(c.data.source is not None, "data.source is not set; give the training images, e.g. data.source=path/to/images "
                                    "(a folder, a class-per-subfolder folder, a .txt list, or builtin:digits)")
    t, cr, o, m = c.train, c.crops, c.optim, c.model
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
    _validate_highres(c, patch, need, warnings)
    warnings += _validate_distill(c, need)

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

    e = c.eval
    need(e.knn_every >= -1, f"eval.knn_every={e.knn_every} must be >= -1 (-1 never, 0 only at the end)")
    need(all(k >= 1 for k in e.knn_k) and len(e.knn_k) > 0, f"eval.knn_k={e.knn_k} must list positive integers")
    need(e.image_size is None or patch is None or e.image_size % patch == 0,
         f"eval.image_size={e.image_size} is not a multiple of model.patch_size={patch}")
    need(c.monitor.collapse_patience >= 1, f"monitor.collapse_patience={c.monitor.collapse_patience} must be >= 1")
    return warnings


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
