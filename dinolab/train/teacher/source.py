"""Read a distillation teacher: its backbone, its DINO/iBOT heads when the source has them, and a checksum.

Sources accepted by ``distill.teacher`` (see :func:`read_teacher`):

- a **dinolab run directory** (``config.yaml``, ``checkpoint.pt``, ``teacher_backbone.json``): the
  EMA teacher of its last checkpoint, backbone *and* heads, the architecture taken from
  ``teacher_backbone.json`` (so backbone and heads come from the same iteration);
- a **training checkpoint** that keeps heads next to the backbone: official DINO v1
  (``teacher: {backbone.*, head.*}``), DINOv2/DINOv3 (``teacher: {backbone.*, dino_head.*, ibot_head.*}``,
  or FSDP ``model: {teacher.*}``), a dinolab ``checkpoint.pt``;
- anything else :func:`dinolab.load_model` reads (hub ``.pth``, dinolab ``.safetensors``, Hugging Face
  folders): the backbone only (no head was ever released with the official backbones).

A head is rebuilt from its tensors alone (:func:`head_from_state`): the number of MLP layers, hidden and
bottleneck widths, BatchNorm and weight-normalised or plain prototypes are read from the shapes.

Examples:
    >>> source = read_teacher("runs/shapes_teacher")                          # doctest: +SKIP
    >>> source.backbone.embed_dim, sorted(source.heads), source.sha256[:8]    # doctest: +SKIP
    (192, ['dino_head'], '3f1c9a0e')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ...errors import ConfigError, WeightsError
from ...models import DINOHead, VisionTransformer

RUN_FILES = ("checkpoint.pt", "teacher_backbone.json")
_WRAPPERS = ("module.", "_orig_mod.")
_HEADS = {"dino_head.": "dino_head", "ibot_head.": "ibot_head", "head.": "dino_head"}  # "head." is DINO v1's
_MLP_WEIGHT = re.compile(r"^mlp\.(\d+)\.weight$")


@dataclass
class TeacherSource:
    """What :func:`read_teacher` found.

    ``heads`` maps ``"dino_head"`` / ``"ibot_head"`` to the head's state dict (keys without prefix);
    ``files`` are the files read, whose bytes ``sha256`` digests (in this order).
    """

    path: Path
    backbone: VisionTransformer
    heads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    sha256: str = ""
    description: str = ""


def files_sha256(files: list[Path]) -> str:
    """One SHA-256 over the bytes of ``files`` (each preceded by its name, so moving bytes between files counts)."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "checkpoint.pt").exists()


def read_teacher(path: str | Path, *, with_heads: bool = True) -> TeacherSource:
    """The frozen teacher in ``path`` (see the module docstring); ``with_heads=False`` skips looking for heads.

    Raises:
        ConfigError / WeightsError naming ``distill.teacher`` and the fix.
    """
    p = Path(path).expanduser()
    if is_run_dir(p):
        return _read_run(p)
    from ...models.weights import detect_format, load_model

    try:
        kind, found = detect_format(p)
        backbone = load_model(p)
    except WeightsError as e:
        raise WeightsError(f"distill.teacher={path}: {e}") from None
    files = _source_files(kind, found)
    heads: dict[str, dict[str, torch.Tensor]] = {}
    if with_heads and kind in ("torch", "safetensors"):
        heads = _heads_in_file(kind, found)
    where = f"{found} ({kind}{', heads: ' + ', '.join(sorted(heads)) if heads else ', backbone only'})"
    return TeacherSource(p, backbone.requires_grad_(False), heads, files, files_sha256(files), where)


def _source_files(kind: str, found: Path) -> list[Path]:
    if kind == "dinolab":
        return [f for f in (found, found.with_suffix(".json")) if f.exists()]
    if kind == "hf":
        return sorted(f for f in found.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"))
    return [found]


def _heads_in_file(kind: str, path: Path) -> dict[str, dict[str, torch.Tensor]]:
    from ...models.formats import official
    from ...models.formats.tensor_files import read_safetensors, read_torch_file

    obj = read_safetensors(path)[0] if kind == "safetensors" else read_torch_file(path)
    try:
        raw, _ = official.select_backbone_dict(obj, str(path))
    except WeightsError:
        return {}
    return split_heads(raw)


def split_heads(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"dino_head": {...}, "ibot_head": {...}}`` from a state dict that holds heads next to a backbone."""
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = str(key)
        while name.startswith(_WRAPPERS):
            name = name.split(".", 1)[1]
        for prefix, head in _HEADS.items():
            if name.startswith(prefix):
                heads.setdefault(head, {})[name[len(prefix):]] = value
                break
    return heads


def _read_run(run: Path) -> TeacherSource:
    from ...models.formats import dinolab_format
    from ...models.formats.tensor_files import read_torch_file
    from ...models.weights import LoadedWeights, build_model

    arch = run / "teacher_backbone.json"
    if not arch.is_file():
        hint = (f"; it looks like a distillation run: use its student, distill.teacher={run / 'student_ema_backbone.safetensors'}"
                if (run / "student_ema_backbone.json").is_file() else "; let the run finish one epoch first")
        raise ConfigError(f"distill.teacher={run}: this run directory has no teacher_backbone.json{hint}")
    config = dinolab_format.read(arch)[0]
    state = read_torch_file(run / "checkpoint.pt")
    teacher = state.get("teacher") if isinstance(state, dict) else None
    if not isinstance(teacher, dict):
        raise ConfigError(f"distill.teacher={run}: {run / 'checkpoint.pt'} holds no EMA teacher (a distillation run?); "
                          f"give a weights file instead, e.g. distill.teacher={run}/student_ema_backbone.safetensors")
    sd = {k[len("backbone."):]: v for k, v in teacher.items() if k.startswith("backbone.")}
    backbone = build_model(LoadedWeights(run / "checkpoint.pt", "dinolab", dict(config), sd))
    files, heads = [run / name for name in RUN_FILES], split_heads(teacher)
    return TeacherSource(run, backbone.eval().requires_grad_(False), heads, files, files_sha256(files),
                         f"{run} (EMA teacher of step {state.get('iteration')}, heads: {', '.join(sorted(heads)) or 'none'})")


def head_from_state(state: Mapping[str, torch.Tensor], where: str) -> DINOHead:
    """A frozen :class:`DINOHead` whose architecture is read from the shapes of ``state`` (keys without prefix).

    ``mlp.<i>.weight`` (or ``mlp.weight`` for one layer) give the layers and widths, ``mlp.<i>.running_mean``
    BatchNorm, ``last_layer.weight_v``/``weight_g`` weight-normalised prototypes (DINO v1/v2) and
    ``last_layer.weight`` plain ones (DINOv3). Shapes: ``(B, D) -> (B, K)``.
    """
    linears = sorted((int(m.group(1)), v) for k, v in state.items() if (m := _MLP_WEIGHT.match(k)) and v.ndim == 2)
    weights = [v for _, v in linears] or ([state["mlp.weight"]] if "mlp.weight" in state else [])
    weight_norm = "last_layer.weight_v" in state
    last = state.get("last_layer.weight_v" if weight_norm else "last_layer.weight")
    if not weights or last is None or last.ndim != 2:
        keys = ", ".join(sorted(state)[:8]) or "none"
        raise WeightsError(f"{where}: not a DINO/iBOT head this dinolab can rebuild (keys: {keys}); use "
                           f"distill.heads=random to distil with frozen random heads instead")
    use_bn = any(k.endswith(".running_mean") for k in state)
    hidden = weights[0].shape[0] if len(weights) > 1 else weights[-1].shape[0]
    head = DINOHead(int(weights[0].shape[1]), int(last.shape[0]), hidden_dim=int(hidden),
                    bottleneck_dim=int(weights[-1].shape[0]), nlayers=len(weights), use_bn=use_bn,
                    weight_norm=weight_norm)
    try:
        head.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise WeightsError(f"{where}: the head tensors do not fit the head read from their shapes "
                           f"({str(e).splitlines()[0]}); use distill.heads=random") from None
    return head.eval().requires_grad_(False)
