"""The training config's schema: dataclass sections and defaults, loaded from YAML files, presets and
dotted ``key=value`` overrides by :mod:`dinolab.runtime.config_loader`; cross-field checks are in
:mod:`dinolab.train.validation` (:func:`validate`, re-exported here).

The sections follow the DINOv2 code base (``model``, ``data``, ``crops``, ``dino``, ``ibot``,
``koleo``, ``gram``, ``distill``, ``teacher``, ``optim``, ``train``, ``eval``, ``monitor``). The
dataclass defaults are the official DINO v1 ViT-S/16 recipe; a YAML file (or a packaged preset
named without ``.yaml``, see ``dinolab/configs/``) is merged over them, then the command-line
overrides. ``dinolab train`` with no file uses the packaged ``default`` preset (a small ViT on
``builtin:digits``).

Plugin objectives may add a section of their own (:func:`register_section`, called by
:func:`~dinolab.train.objectives.register_objective`); loaded configs then hold it like the
built-in ones.

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

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from ..errors import ConfigError
from ..runtime.config_loader import ConfigSchema, bounded, device_name, parse_override, save_config, to_dict, to_yaml
from ..runtime.config_loader import valid_keys as _valid_keys
from .validation import validate

__all__ = ["Config", "ConfigError", "ConfigSchema", "SCHEMA", "apply_overrides", "config_from_dict", "list_presets",
           "load_config", "merge", "parse_override", "read_yaml", "register_section", "save_config", "schema",
           "unregister_section", "valid_keys", "validate"]

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
    """DINOv3 Gram anchoring (:mod:`dinolab.train.objectives.gram_anchoring`); iterations are 0-based steps."""

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
    """Distillation from a frozen teacher (see :mod:`dinolab.train.teacher.frozen`); off while ``teacher`` is null."""

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

    def section(self, name: str) -> Any:
        """The section ``name``: a built-in one, or one a plugin objective registered (its defaults when
        this config was built without it, e.g. ``Config()`` in code)."""
        if hasattr(self, name):
            return getattr(self, name)
        if name in _SECTIONS:
            return _SECTIONS[name]()
        raise KeyError(f"no config section {name!r}; registered plugin sections: {', '.join(_SECTIONS) or 'none'}")


SCHEMA = ConfigSchema(Config, PRESET_PACKAGE, DEFAULT_PRESET, command="dinolab train")

# ------------------------------------------------------------------------------------------------
# sections of plugin objectives

_SECTIONS: dict[str, type] = {}  # name -> dataclass, in registration order
_schema = SCHEMA  # SCHEMA, or over a Config subclass holding the registered sections


def register_section(name: str, section: type) -> None:
    """Add the top-level YAML section ``name`` with dataclass schema ``section`` to every config loaded
    afterwards (used by :func:`~dinolab.train.objectives.register_objective`): ``load_config`` then
    merges, type-checks, range-checks (:func:`~dinolab.runtime.config_loader.bounded` fields) and saves it."""
    if not dataclasses.is_dataclass(section):
        raise TypeError(f"the config section {name!r} must be a dataclass, got {section!r}")
    if name in {f.name for f in dataclasses.fields(Config)} or not name.isidentifier():
        raise ValueError(f"{name!r} cannot name a config section: it is a built-in section or not an identifier")
    _SECTIONS[name] = section
    _rebuild()


def unregister_section(name: str) -> None:
    """Remove a section added by :func:`register_section` (no error if there is none)."""
    if _SECTIONS.pop(name, None) is not None:
        _rebuild()


def _rebuild() -> None:
    global _schema
    if not _SECTIONS:
        _schema = SCHEMA
        return
    fields = [(n, cls, field(default_factory=cls)) for n, cls in _SECTIONS.items()]
    root = dataclasses.make_dataclass("Config", fields, bases=(Config,), namespace={"__module__": __name__})
    _schema = dataclasses.replace(SCHEMA, root=root)


def schema() -> ConfigSchema:
    """The loader of training configs: :data:`SCHEMA` plus the sections plugin objectives registered."""
    return _schema


def valid_keys(cls: type | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (plugin sections included), e.g. ``optim.lr``."""
    return _valid_keys(cls or _schema.root, prefix)


def merge(config: Config, values: dict[str, Any], where: str = "") -> Config:
    """Merge a nested dict of values into ``config`` (in place; also returned)."""
    return _schema.merge(config, values, where)


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    return _schema.apply_overrides(config, overrides)


def list_presets() -> list[str]:
    """Names of the packaged presets (``dinolab/configs/*.yaml``)."""
    return _schema.list_presets()


def preset_summary(name: str) -> str:
    """The first sentence of preset ``name``'s leading comment ('' when it has none)."""
    text, _ = _schema._preset_text(name)
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment, depth = " ".join(x for x in lines if x) + " ", 0
    for i, ch in enumerate(comment[:-1]):  # the first '.', ':' or ';' outside parentheses, then a space
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch in ".:;" and comment[i + 1] == " ":
            return comment[:i]
    return comment.strip()


def read_yaml(source: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The dict in a YAML file or packaged preset, and a description of where it came from."""
    return _schema.read_yaml(source)


def load_config(source: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file or preset ``source`` (None: the ``default`` preset), then ``overrides``."""
    return _schema.load(source, overrides)


def config_from_dict(values: dict[str, Any], where: str = "") -> Config:
    """A Config from a (possibly partial) nested dict merged over the defaults."""
    return _schema.from_dict(values, where)

