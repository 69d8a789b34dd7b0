"""An aligned model: frozen backbone + vision head + text encoder + tokenizer, saved as a folder.

Folder layout (written by :func:`save_aligned`, read by :func:`load_aligned`)::

    aligned.json          format, architecture of the head and the text encoder, image size,
                          logit scale, and the backbone: its fingerprint, the path it was read
                          from and/or the name of the copy below
    heads.safetensors     vision_head.*, text_encoder.*, logit_scale
    tokenizer.json        the word vocabulary (see dinolab.text.tokenizer)
    backbone.safetensors  a copy of the frozen backbone in dinolab's format (+ backbone.json),
                          unless the folder was saved with copy_backbone=False

The backbone **fingerprint** is a SHA-256 of its state dict (names, dtypes, shapes and bytes).
Loading with other weights than those the heads were trained on is refused, and training
checks that the fingerprint did not change (the backbone is frozen, bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import DataError, WeightsError
from ..io import atomic_save_text, atomic_write
from ..models.preprocess import Preprocess, resolve_preprocess
from .clip_loss import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE
from .text_encoder import TextEncoder
from .tokenizer import WordTokenizer
from .vision_head import VisionHead

FORMAT = "dinolab-aligned"
FORMAT_VERSION = 1
CONFIG_FILE, HEADS_FILE, TOKENIZER_FILE, BACKBONE_FILE = ("aligned.json", "heads.safetensors", "tokenizer.json",
                                                          "backbone.safetensors")


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 hex digest of ``module.state_dict()`` (sorted names, dtypes, shapes, raw bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class AlignedModel(nn.Module):
    """A frozen backbone with a trained vision head and text encoder in one joint embedding space.

    Attributes:
        backbone: the frozen :class:`~dinolab.models.VisionTransformer` (always in eval mode, no grads).
        vision_head: :class:`~dinolab.text.vision_head.VisionHead`.
        text_encoder: :class:`~dinolab.text.text_encoder.TextEncoder`.
        tokenizer: :class:`~dinolab.text.tokenizer.WordTokenizer`.
        logit_scale: learned log inverse temperature (scalar parameter).
        image_size: side of the square the images are fed at (``preprocess.image_size``).
        preprocess: how images are prepared (:class:`~dinolab.models.Preprocess`): the backbone's
            ``preprocess`` at ``image_size`` unless given (the record of a saved model keeps it).
        backbone_fingerprint: :func:`state_fingerprint` of the backbone the heads were trained on.
        history: per-epoch metrics of the :func:`~dinolab.text.align` run that made it (in memory only).
        skipped: ``(where, reason)`` of the pairs that run left out (in memory only).

    Examples:
        >>> import dinolab
        >>> bb = dinolab.create_model("vit_tiny", img_size=32, patch_size=16, depth=1)
        >>> tok = WordTokenizer.build(["a red circle"])
        >>> m = AlignedModel(bb, VisionHead(192, 16, hidden_dim=0), TextEncoder(len(tok), 16, width=32, depth=1),
        ...                  tok, image_size=32)
        >>> m.encode_text(["a circle", "a red circle"]).shape, m.encode_images(torch.zeros(1, 3, 32, 32)).shape
        (torch.Size([2, 16]), torch.Size([1, 16]))
    """

    def __init__(self, backbone: nn.Module, vision_head: VisionHead, text_encoder: TextEncoder,
                 tokenizer: WordTokenizer, *, image_size: int | None = None, logit_scale: float = INIT_LOGIT_SCALE,
                 backbone_fingerprint: str | None = None, preprocess: Preprocess | None = None) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.vision_head, self.text_encoder, self.tokenizer = vision_head, text_encoder, tokenizer
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.preprocess = resolve_preprocess(backbone, image_size=image_size, preprocess=preprocess)
        self.backbone_fingerprint = backbone_fingerprint or state_fingerprint(backbone)
        self.history: list[dict[str, Any]] = []  # per-epoch records of the alignment run (align() fills it)
        self.skipped: list[tuple[str, str]] = []  # pairs left out by align(): (where, reason)

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @image_size.setter
    def image_size(self, size: int) -> None:
        self.preprocess = self.preprocess.replace(image_size=int(size))

    def train(self, mode: bool = True) -> AlignedModel:
        super().train(mode)
        self.backbone.eval()  # frozen: dropout/drop-path stay off whatever the caller asks
        return self

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def embed_dim(self) -> int:
        return int(self.vision_head.config["out_dim"])

    @property
    def scale(self) -> float:
        return float(torch.exp(self.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE)))

    def backbone_tokens(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images ``(B, 3, H, W)`` -> the frozen backbone's final-norm ``cls``/``registers``/``patches``."""
        from ..eval.microbatch import in_micro_batches, micro_batch_size_for

        with torch.no_grad():
            out = in_micro_batches(self.backbone.forward_features, images, micro_batch_size_for(self.backbone, images))
        return {k: out[k] for k in ("cls", "registers", "patches")}

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images ``(B, 3, H, W)`` -> ``(B, E)`` L2-normalised embeddings."""
        t = self.backbone_tokens(images)
        return self.vision_head(t["cls"].float(), t["registers"].float(), t["patches"].float())

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Captions or prompts -> ``(B, E)`` L2-normalised embeddings."""
        ids = self.tokenizer.encode(texts, self.text_encoder.context_length).to(self.device)
        return self.text_encoder(ids)


# ------------------------------------------------------------------------------------------------
# saving and loading


def save_aligned(model: AlignedModel, folder: str | os.PathLike, *, backbone_path: str | os.PathLike | None = None,
                 copy_backbone: bool = True, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` into ``folder`` (see the module doc; existing files there are replaced).

    ``backbone_path`` (where the backbone weights were read from) is recorded as a reference; with
    ``copy_backbone=False`` it is the only way back to the backbone, so it is then required.
    """
    from ..models.formats.tensor_files import write_safetensors
    from ..models.weights import save_model

    folder = Path(folder)
    if not copy_backbone and backbone_path is None:
        raise ValueError("copy_backbone=False needs backbone_path: the folder must say where the backbone is")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"vision_head.{k}": v for k, v in model.vision_head.state_dict().items()}
    tensors.update({f"text_encoder.{k}": v for k, v in model.text_encoder.state_dict().items()})
    tensors["logit_scale"] = model.logit_scale.detach().reshape(1)
    write_safetensors(folder / HEADS_FILE, {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      {"format": "pt"})
    model.tokenizer.save(folder / TOKENIZER_FILE)
    if copy_backbone:
        save_model(model.backbone, folder / BACKBONE_FILE, overwrite=True,
                   metadata={"role": "frozen backbone of an aligned model"})
    from .. import __version__

    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dinolab_version": __version__,
        "image_size": model.image_size, "preprocess": model.preprocess.to_dict(), "embed_dim": model.embed_dim,
        "logit_scale": float(model.logit_scale.detach()),
        "vision_head": model.vision_head.config, "text_encoder": model.text_encoder.config,
        "backbone": {"fingerprint": model.backbone_fingerprint,
                     "file": BACKBONE_FILE if copy_backbone else None,
                     "path": None if backbone_path is None else str(Path(backbone_path).resolve()),
                     "config": _jsonable(getattr(model.backbone, "config", {}))},
        "metadata": _jsonable(metadata or {}),
    }
    atomic_save_text(folder / CONFIG_FILE, json.dumps(record, indent=2) + "\n")
    return folder


def read_aligned_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``aligned.json`` record of an aligned model folder."""
    folder = Path(folder)
    path = folder / CONFIG_FILE if folder.is_dir() or not folder.suffix else folder
    if not path.exists():
        raise WeightsError(f"{folder} is not an aligned model: {path} is missing; pass the folder written by "
                           f"`dinolab align --out DIR`")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path} is not readable JSON ({e}); re-run `dinolab align`") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a dinolab aligned model (format {FORMAT!r} expected)")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path} was written by a newer dinolab (format version {record['format_version']}); "
                           f"upgrade dinolab")
    return record


def load_aligned(folder: str | os.PathLike, *, weights: str | os.PathLike | nn.Module | None = None,
                 device: str | torch.device = "cpu") -> AlignedModel:
    """Load an aligned model folder written by :func:`save_aligned` / :func:`dinolab.text.align`.

    Args:
        folder: the aligned model folder (or its ``aligned.json``).
        weights: the backbone to use instead of the folder's copy or reference: a weights path any
            format :func:`dinolab.load_model` reads, or a model. It must be the backbone the heads were
            trained on (same fingerprint), else :class:`WeightsError`.
        device: where to put the model.

    Returns:
        :class:`AlignedModel` in eval mode.
    """
    from ..device import resolve_device
    from ..models.formats.tensor_files import read_safetensors
    from ..models.weights import load_model

    record = read_aligned_config(folder)
    folder = Path(folder)
    folder = folder if folder.is_dir() else folder.parent
    info = record["backbone"]
    if weights is not None:
        backbone = weights if isinstance(weights, nn.Module) else load_model(weights)
        source = "the given weights" if isinstance(weights, nn.Module) else str(weights)
    elif info.get("file") and (folder / info["file"]).exists():
        backbone, source = load_model(folder / info["file"]), str(folder / info["file"])
    elif info.get("path") and Path(info["path"]).exists():
        backbone, source = load_model(info["path"]), info["path"]
    else:
        where = " or ".join(x for x in (info.get("file") and str(folder / info["file"]), info.get("path")) if x)
        raise WeightsError(f"the backbone of aligned model {folder} is not at {where or 'any recorded place'}; "
                           f"pass the backbone weights it was trained on (--weights W / weights=W)")
    backbone = backbone.float()
    fingerprint = state_fingerprint(backbone)
    if fingerprint != info["fingerprint"]:
        raise WeightsError(f"{source} is not the backbone aligned model {folder} was trained on (fingerprint "
                           f"{fingerprint[:12]} != {info['fingerprint'][:12]}); pass the weights used for "
                           f"`dinolab align`, or leave --weights out to use the copy in the folder")
    tokenizer = WordTokenizer.load(folder / TOKENIZER_FILE)
    try:
        head = VisionHead(**record["vision_head"])
        text = TextEncoder(**record["text_encoder"])
    except TypeError as e:
        raise WeightsError(f"{folder / CONFIG_FILE}: cannot build the heads it describes ({e})") from None
    tensors = read_safetensors(folder / HEADS_FILE)[0] if (folder / HEADS_FILE).exists() else None
    if tensors is None:
        raise WeightsError(f"{folder / HEADS_FILE} is missing; copy the whole folder written by `dinolab align`")
    preprocess = (Preprocess.from_dict(record["preprocess"], str(folder / CONFIG_FILE)) if "preprocess" in record
                  else None)  # older records: the backbone's, at the recorded size
    model = AlignedModel(backbone, head, text, tokenizer, image_size=int(record["image_size"]),
                         backbone_fingerprint=fingerprint, preprocess=preprocess)
    for prefix, module in (("vision_head.", head), ("text_encoder.", text)):
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as e:
            raise WeightsError(f"{folder / HEADS_FILE} does not fit {folder / CONFIG_FILE}: {e}") from None
    model.logit_scale.data.copy_(tensors["logit_scale"].reshape(()))
    return model.to(resolve_device(device)).eval()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# ------------------------------------------------------------------------------------------------
# image embeddings in the joint space


@dataclass
class AlignedEmbeddings:
    """Joint-space image embeddings of a data set, one row per readable image.

    Attributes:
        paths: image paths (N).
        emb: ``(N, E)`` float32, L2-normalised.
        labels, classes: as the data set's (None without classes).
        bad: ``(path, reason)`` of each unreadable file.
        head_fingerprint: :func:`state_fingerprint` of the vision head (and backbone) that made them.
    """

    paths: list[str]
    emb: np.ndarray
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    bad: list[tuple[str, str]] = field(default_factory=list)
    head_fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (no pickles) atomically."""
        arrays = {"paths": np.array(self.paths, dtype=str), "aligned_emb": np.asarray(self.emb, np.float32),
                  "head_fingerprint": np.array(self.head_fingerprint),
                  "bad_paths": np.array([p for p, _ in self.bad], dtype=str),
                  "bad_reasons": np.array([r for _, r in self.bad], dtype=str)}
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels, np.int64)
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=str)
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)
        return Path(path)


def image_fingerprint(model: AlignedModel) -> str:
    """Identifies the image side of ``model`` (backbone + vision head + image size, and the rest of its
    preprocessing where that is not the default)."""
    p = model.preprocess
    extra = "" if p == Preprocess(image_size=p.image_size) else "|" + json.dumps(p.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{model.backbone_fingerprint}|{state_fingerprint(model.vision_head)}|"
                          f"{model.image_size}{extra}".encode()).hexdigest()


def embed_images(model: AlignedModel, data: Any, *, batch_size: int = 64, device: str = "auto",
                 precision: str = "auto", num_workers: int = 0, progress: bool = True) -> AlignedEmbeddings:
    """Joint-space embeddings of every readable image of ``data`` (a data set or a source for one).

    Images are prepared by ``model.preprocess`` (the backbone's resize rule and normalisation at
    ``model.image_size``, as during :func:`dinolab.text.align`). Unreadable files are skipped and
    listed in ``bad``.
    """
    from tqdm.auto import tqdm

    from ..data import ImageDataset, make_loader
    from ..device import autocast, resolve_device, resolve_precision
    dataset = data if hasattr(data, "load") and hasattr(data, "paths") else ImageDataset(data)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model.to(dev).eval()
    loader = make_loader(dataset, batch_size, num_workers=num_workers, resize_mode="eval",
                         load_size=model.image_size, preprocess=model.preprocess)
    rows, indices, bad = [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="embed images", unit="batch", disable=None if progress else True):
            bad += batch["bad"]
            if not len(batch["indices"]):
                continue
            x = model.preprocess.normalize(batch["images"].to(dev))
            with autocast(dev, prec):
                tokens = model.backbone_tokens(x)
            rows.append(model.vision_head(*(tokens[k].float() if tokens[k] is not None else None
                                             for k in ("cls", "registers", "patches"))).cpu())
            indices.append(batch["indices"])
    if not rows:
        raise DataError(f"none of the {len(dataset)} images of {getattr(dataset, 'source', 'the data')} could be "
                        f"read; check that the files are images")
    order = torch.cat(indices).numpy()
    labels = getattr(dataset, "labels", None)
    return AlignedEmbeddings([dataset.paths[i] for i in order], torch.cat(rows).numpy(),
                             None if labels is None else np.asarray(labels, np.int64)[order],
                             getattr(dataset, "classes", None), bad, image_fingerprint(model))


def load_embeddings(path: str | os.PathLike, model: AlignedModel) -> AlignedEmbeddings:
    """Read image embeddings for ``model`` from an ``.npz``.

    Accepts a file written by :meth:`AlignedEmbeddings.save` for this very model, or an
    ``.npz`` from ``dinolab embed --patch-mean`` of the same backbone (its CLS and mean patch
    token are put through the vision head; this needs a head without blocks).
    """
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"embeddings file {path} does not exist") from None
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is not a readable .npz embeddings file ({e})") from None
    with z:
        get = lambda k: z[k] if k in z else None  # noqa: E731
        classes = None if get("classes") is None else [str(c) for c in z["classes"]]
        bad = list(zip(map(str, z["bad_paths"]), map(str, z["bad_reasons"]))) if "bad_paths" in z else []
        paths = [str(p) for p in z["paths"]] if "paths" in z else None
        if paths is None:
            raise DataError(f"{path} has no 'paths' array; it was not written by dinolab")
        if "aligned_emb" in z:
            if str(z["head_fingerprint"]) != image_fingerprint(model):
                raise DataError(f"{path} holds embeddings of another aligned model (or image size); recompute them "
                                f"from the images with this aligned model")
            return AlignedEmbeddings(paths, z["aligned_emb"], get("labels"), classes, bad, str(z["head_fingerprint"]))
        if "cls" not in z or "patch_mean" not in z:
            raise DataError(f"{path} has no 'aligned_emb' nor 'cls' + 'patch_mean' arrays; make it with "
                            f"`dinolab embed WEIGHTS DATA --patch-mean --out FILE.npz` or search the images directly")
        d = model.vision_head.embed_dim
        if model.vision_head.needs_tokens or z["cls"].shape[1] != d or z["patch_mean"].shape[1] != d:
            raise DataError(f"{path}: backbone embeddings can only go through a vision head without blocks, from the "
                            f"same backbone (width {d}) with --n-last-blocks 1; search the images directly instead")
        pooled = torch.from_numpy(np.concatenate([z["cls"], z["patch_mean"]], axis=1)).float().to(model.device)
        with torch.inference_mode():
            emb = model.vision_head.forward_pooled(pooled).cpu().numpy()
        return AlignedEmbeddings(paths, emb, get("labels"), classes, bad, image_fingerprint(model))


def images_or_embeddings(source: str | os.PathLike, model: AlignedModel) -> Any:
    """``source`` as :class:`AlignedEmbeddings` when it is an ``.npz`` (see :func:`load_embeddings`), else as an
    :class:`~dinolab.data.ImageDataset`."""
    from ..data import ImageDataset

    if str(source).lower().endswith(".npz"):
        return load_embeddings(source, model)
    return ImageDataset(source)
