"""Distillation: a small student trained from a large *frozen* teacher (DINOv2 §5, DINOv3 §5.2).

Distillation is a configuration of the ordinary trainer (its teacher strategy is :class:`FrozenTeacher`),
switched on by ``distill.teacher=PATH``:

- the **teacher** is the model in ``PATH`` (anything :func:`dinolab.load_model` reads, a training
  checkpoint with heads, or a dinolab run directory; see :mod:`dinolab.train.teacher.source`), in eval
  mode, without gradients, never EMA-updated and never saved in checkpoints (it is re-read from
  ``PATH`` on resume, and its SHA-256 must match the one recorded);
- the **student** is ``model.*`` (smaller; its width and patch size may differ from the teacher's)
  with the same objectives as pretraining: DINO on the CLS of every crop, KoLeo, and iBOT. As in the
  DINOv2 recipe, the student's global crops are not masked (``ibot.mask_sample_probability=0``) and
  iBOT is applied to *every* patch token of the two global crops; stochastic depth is off
  (``model.drop_path_rate=0``). Other settings still work and get a warning;
- an **EMA of the student** (momentum schedule ``teacher.momentum_teacher`` -> ``final_momentum_teacher``)
  is "the model to use": it is exported at every epoch end as ``student_ema_backbone.safetensors``
  (+ ``.json``) and is what the k-NN evaluations measure.

Relational term. ``distill.relation_loss_weight > 0`` adds
:mod:`dinolab.train.objectives.relation_distill`: the student's CLS
neighbourhoods within the batch match the teacher's (a KL between softmax cosine similarities). It
needs no head and works across widths; the ``distill_shapes`` preset turns it on, ``distill_vits14``
keeps the paper's recipe.

Heads. The student's heads map its width to the teacher's prototypes (same ``dino.out_dim`` /
``ibot.out_dim``; the official code asserts equal prototype counts). The targets come from the
teacher's own heads (``distill.heads``):

- ``file``: the heads stored with the teacher (a dinolab run directory or ``checkpoint.pt``, official
  DINO v1/v2/v3 training checkpoints), frozen. This is the recipe: the teacher is a full pretrained
  model, heads included;
- ``random``: the objectives' heads for the teacher's width, initialised from ``train.seed`` and kept
  frozen. Released backbones (hub ``.pth``, Hugging Face, exported ``.safetensors``) carry no heads,
  and a head cannot be trained against a frozen teacher without a second objective. A frozen random
  MLP + L2-normalised bottleneck + prototype layer is a fixed random projection of the teacher's
  tokens onto K directions, so the targets ``softmax(cos(proj(teacher token), prototype) / T)``
  encode the teacher's angular geometry and the student learns to reproduce it through its own
  (trained) heads, keeping the objective of the recipe unchanged;
- ``auto`` (default): ``file`` when the source holds every head the objectives need, else ``random``.

Crop sizes. The teacher sees the student's global crops resized (bicubic, antialiased) so that its
patch grid equals the student's: a ViT-g/14 teacher gets 224 px crops of a ViT-S/14 student as they
are, and 196 px crops of a ViT-S/16 student. ``distill.teacher_crops_size`` sets the teacher's size
explicitly (it must be a multiple of the teacher's patch size and, with iBOT, give the student's grid).

Examples:
    >>> from dinolab.train.config import load_config
    >>> cfg = load_config("distill_shapes", ["distill.teacher=runs/shapes_teacher"])  # doctest: +SKIP
    >>> Trainer(cfg, "runs/distilled").fit().knn                                      # doctest: +SKIP
    {10: 0.87, 20: 0.86}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, DinolabError
from ...models import VisionTransformer
from .base import TeacherStrategy
from .ema import EMA
from .source import TeacherSource, head_from_state, read_teacher

if TYPE_CHECKING:
    from ..config import DistillConfig

STUDENT_EXPORT = "student_ema_backbone.safetensors"
EXPORT_FILES = (STUDENT_EXPORT, "student_ema_backbone.json")


class ResizedInput(nn.Module):
    """A frozen backbone fed its input resized to ``size`` (or to the student's patch grid times its patch size).

    Shapes: ``forward_features(x (B, 3, H, W))`` runs the backbone on ``(B, 3, h, w)`` with
    ``h = H // student_patch * patch`` (or ``size``), so its ``patches`` are ``(B, N, D_teacher)`` on the
    student's grid.
    """

    def __init__(self, backbone: VisionTransformer, student_patch: int, size: int | None = None) -> None:
        super().__init__()
        self.backbone, self.student_patch, self.size = backbone, student_patch, size

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size, self.size
        p, q = self.backbone.patch_size, self.student_patch
        return h // q * p, w // q * p

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None,
                         local_crop: bool = False) -> dict[str, Any]:
        size = self.target_size(x.shape[-2], x.shape[-1])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        return self.backbone.forward_features(x, masks, local_crop=local_crop)


def _check_crop_size(d: DistillConfig, teacher: VisionTransformer, student_patch: int, global_crops_size: int,
                     pairs_patches: bool) -> None:
    size, p = d.teacher_crops_size, teacher.patch_size
    if size is None:
        return
    if size % p != 0 or size < p:
        raise ConfigError(f"distill.teacher_crops_size={size} is not a multiple of the teacher's patch size {p}; "
                          f"use e.g. distill.teacher_crops_size={max(p, size // p * p)}")
    grid = global_crops_size // student_patch
    if pairs_patches and size // p != grid:
        raise ConfigError(f"distill.teacher_crops_size={size} gives the teacher a {size // p}x{size // p} patch grid but "
                          f"the student has {grid}x{grid} (crops.global_crops_size={global_crops_size}, "
                          f"patch {student_patch}); iBOT pairs their patch tokens one to one: use "
                          f"distill.teacher_crops_size={grid * p} or leave it unset")


class FrozenTeacher(TeacherStrategy):
    """Distillation: a frozen pretrained teacher, and the student's EMA as the model to use.

    Args:
        d: the ``distill`` section (``d.teacher`` set).
        student: the student ``ModuleDict`` (``backbone`` + heads), already on ``device``.
        student_ema: :func:`~dinolab.train.teacher.base.ema_copy` of the student backbone.
        make_heads: ``make_heads(width) -> {name: head}`` of the objectives (frozen random teacher heads).
        device: where the teacher runs.
        seed: seeds the random teacher heads (``train.seed``).
        global_crops_size: the student's global crop size (checks ``d.teacher_crops_size``).
        pairs_patches: True when an objective pairs student and teacher patch tokens (iBOT).

    Attributes:
        model: ``ModuleDict`` with ``backbone`` (frozen, wrapped in :class:`ResizedInput` when its
            input size differs) and the heads, all frozen, in eval mode.
        student_ema: the EMA of the student backbone (no drop-path, eval mode).
        ema: the :class:`EMA` updating ``student_ema`` after every optimizer step.
        heads_origin: ``"file"`` or ``"random"``.
    """

    export_name = STUDENT_EXPORT
    export_files = EXPORT_FILES
    frozen = True

    def __init__(self, d: DistillConfig, *, student: nn.ModuleDict, student_ema: VisionTransformer,
                 make_heads: Callable[[int], dict[str, nn.Module]], device: torch.device, seed: int,
                 global_crops_size: int, pairs_patches: bool) -> None:
        self.cfg, self.seed = d, seed
        self.source: TeacherSource = read_teacher(d.teacher, with_heads=d.heads != "random")
        backbone = self.source.backbone.eval().requires_grad_(False)
        student_backbone: VisionTransformer = student["backbone"]
        _check_crop_size(d, backbone, student_backbone.patch_size, global_crops_size, pairs_patches)
        names = [name for name in student if name != "backbone"]
        heads, self.heads_origin = self._teacher_heads(make_heads, backbone.embed_dim, names)
        for name in names:
            _check_prototypes(name, heads[name], student[name], d.teacher)
        needs_resize = d.teacher_crops_size is not None or backbone.patch_size != student_backbone.patch_size
        wrapped = ResizedInput(backbone, student_backbone.patch_size, d.teacher_crops_size) if needs_resize else backbone
        self.model = nn.ModuleDict({"backbone": wrapped, **heads}).to(device).eval().requires_grad_(False)
        self.student_ema = student_ema.to(device).eval().requires_grad_(False)
        self.ema = EMA(student_backbone, self.student_ema)

    def update(self, momentum: float) -> None:
        self.ema.update(momentum)

    def eval_backbone(self) -> nn.Module:
        return self.student_ema

    def _teacher_heads(self, make_heads: Callable[[int], dict[str, nn.Module]], dim: int,
                       names: list[str]) -> tuple[dict[str, nn.Module], str]:
        d, found = self.cfg, self.source.heads
        have = [n for n in names if n in found]
        if d.heads == "file" or (d.heads == "auto" and have):
            missing = [n for n in names if n not in found]
            if missing:
                hint = (" or ibot.separate_head=false (iBOT then uses the teacher's dino_head)"
                        if missing == ["ibot_head"] else "")
                raise ConfigError(f"distill.teacher={d.teacher}: the objectives need the teacher's {', '.join(names)} "
                                  f"but the file holds {', '.join(sorted(found)) or 'no head'}; set distill.heads=random "
                                  f"(frozen random heads){hint}")
            return {n: head_from_state(found[n], f"distill.teacher={d.teacher} ({n})") for n in names}, "file"
        with torch.random.fork_rng(devices=[]):  # the student's initialisation does not depend on this
            torch.manual_seed(self.seed)
            heads = dict(make_heads(dim))
        return {n: heads[n].eval() for n in names}, "random"

    def describe(self) -> str:
        b = self.source.backbone
        return (f"distilling from the frozen teacher {self.source.description}: ViT width {b.embed_dim}, depth "
                f"{b.depth}, patch {b.patch_size}; teacher heads: {self.heads_origin}")

    # ------------------------------------------------------------------------------------------
    # checkpoint and export

    def state_dict(self) -> dict[str, Any]:
        """``distill``: the teacher's identity (path, SHA-256), its heads (small) and the student EMA;
        ``teacher``: None (the frozen backbone is re-read from its file on resume)."""
        heads = {n: m.state_dict() for n, m in self.model.items() if n != "backbone"}
        return {"teacher": None,
                "distill": {"teacher": str(self.source.path.resolve()), "sha256": self.source.sha256,
                            "heads_origin": self.heads_origin, "teacher_heads": heads,
                            "student_ema": self.student_ema.state_dict()}}

    def load_state_dict(self, checkpoint: dict[str, Any], run_dir: Path) -> None:
        state = checkpoint.get("distill")
        where = f"the checkpoint in {run_dir}"
        if not state:
            raise DinolabError(f"{where} is not from a distillation run, but the config sets distill.teacher="
                               f"{self.cfg.teacher}; resume with the run's own config.yaml")
        if state["sha256"] != self.source.sha256:
            raise DinolabError(
                f"distill.teacher={self.cfg.teacher} is not the teacher {where} was trained with: its "
                f"files' SHA-256 is {self.source.sha256[:16]}..., the checkpoint recorded {state['sha256'][:16]}... "
                f"(teacher {state['teacher']}). Restore that teacher file (a resumed run must see the same teacher) "
                f"or start a new run")
        try:
            for name, head_state in state["teacher_heads"].items():
                self.model[name].load_state_dict(head_state)
            self.student_ema.load_state_dict(state["student_ema"])
        except (RuntimeError, KeyError) as e:
            raise DinolabError(f"{where} does not match the config (student or heads changed?): "
                               f"{str(e).splitlines()[0]}; resume with the run's own config.yaml") from None

    def export(self, run_dir: Path, iteration: int, epoch: int, backbone: nn.Module | None = None,
               preprocess=None) -> Path:
        """Write the student EMA backbone as ``student_ema_backbone.safetensors`` + ``.json`` (load_model reads it),
        recording ``preprocess`` (how it sees: the run's global crop size and normalisation)."""
        from ...models.weights import save_model

        return save_model(backbone or self.student_ema, run_dir / STUDENT_EXPORT, overwrite=True, preprocess=preprocess,
                          metadata={"iteration": iteration, "epoch": epoch, "teacher": str(self.source.path),
                                    "teacher_sha256": self.source.sha256,
                                    "source": "dinolab train (EMA of the distilled student backbone)"})


def _check_prototypes(name: str, teacher_head: nn.Module, student_head: nn.Module, path: str | None) -> None:
    k_t, k_s = _prototypes(teacher_head), _prototypes(student_head)
    if k_t != k_s:
        key = "dino.out_dim" if name == "dino_head" else "ibot.out_dim"
        raise ConfigError(f"distill.teacher={path}: the teacher's {name} has {k_t} prototypes but the student's has "
                          f"{k_s}; the student predicts the teacher's prototypes: set {key}={k_t}")


def _prototypes(head: nn.Module) -> int:
    last = head.last_layer
    weight = last.weight_v if hasattr(last, "weight_v") else last.weight
    return int(weight.shape[0])
