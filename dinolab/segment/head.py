"""The segmentation head on frozen patch tokens, and the folder a fitted model is saved as.

DINOv2's linear protocol: BatchNorm over the channels of the patch tokens (the last block's, or the
last 4 concatenated) then a 1×1 convolution to the class logits, on the patch grid; logits are upsampled
bilinearly to the mask resolution. The logistic-regression head (``kind="logreg"``) is the same 1×1
convolution without BatchNorm, its weights those sklearn fitted.

A HEAD folder (written by :func:`save_segmenter`, read by :func:`load_segmenter`)::

    segmenter.json       format, kind, classes, layers, image size, preprocessing, the backbone's
                         fingerprint (SHA-256 of its state dict) and the path it was read from
    head.safetensors     the head's tensors (bn.* when kind="linear", conv.weight, conv.bias)
    backbone.safetensors a copy of the frozen backbone (+ backbone.json), so the folder is all predict needs

The copy is checked against the fingerprint when loaded; ``weights=`` loads another file with the same
fingerprint instead (no copy needed, e.g. for a large backbone kept elsewhere).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import WeightsError

FORMAT = "dinolab-segmenter"
CONFIG_FILE, HEAD_FILE, BACKBONE_FILE = "segmenter.json", "head.safetensors", "backbone.safetensors"
KINDS = ("linear", "logreg")


class SegmentationHead(nn.Module):
    """``B×C_in×h×w`` patch tokens -> ``B×K×h×w`` logits: BatchNorm (``kind="linear"``) + 1×1 convolution."""

    def __init__(self, in_dim: int, num_classes: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} must be one of {KINDS}")
        self.kind = kind
        self.bn = nn.BatchNorm2d(in_dim) if kind == "linear" else nn.Identity()
        self.conv = nn.Conv2d(in_dim, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(tokens))


class Segmenter(nn.Module):
    """A frozen backbone and a :class:`SegmentationHead`, with what is needed to prepare images."""

    def __init__(self, backbone: nn.Module, head: SegmentationHead, classes: Sequence[str], layers: int,
                 image_size: int, preprocess: Any, fingerprint: str | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone.requires_grad_(False).eval(), head
        self.classes, self.layers, self.image_size, self.preprocess = list(classes), layers, image_size, preprocess
        self.fingerprint = fingerprint

    def train(self, mode: bool = True) -> Segmenter:
        super().train(mode)
        self.backbone.eval()  # frozen: its norms never switch to training statistics
        return self

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised ``B×3×H×W`` -> ``B×K×h×w`` logits on the patch grid (the backbone without gradients)."""
        from ..eval.dense import patch_tokens

        return self.head(patch_tokens(self.backbone, pixels, self.layers).float())


def save_segmenter(seg: Segmenter, folder: str | os.PathLike, *, backbone_path: str | os.PathLike | None = None,
                   metadata: dict[str, Any] | None = None) -> Path:
    """Write ``seg`` into ``folder`` (see the module docstring); returns the folder."""
    from ..io import atomic_save_text
    from ..models.formats.tensor_files import write_safetensors
    from ..models.weights import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / HEAD_FILE, {k: v.detach().cpu().contiguous() for k, v in seg.head.state_dict().items()},
                      {"format": "pt"})
    save_model(seg.backbone, folder / BACKBONE_FILE, overwrite=True, preprocess=seg.preprocess,
               metadata={"role": "frozen backbone of a segmenter"})
    record = {"format": FORMAT, "format_version": 1, "kind": seg.head.kind, "classes": seg.classes,
              "layers": seg.layers, "in_dim": seg.head.conv.in_channels, "image_size": seg.image_size,
              "preprocess": seg.preprocess.to_dict(),
              "backbone": {"fingerprint": seg.fingerprint, "source": None if backbone_path is None else str(backbone_path),
                           "copy": BACKBONE_FILE},
              **(metadata or {})}
    atomic_save_text(folder / CONFIG_FILE, json.dumps(record, indent=2) + "\n")
    return folder


def read_segmenter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``segmenter.json`` of a HEAD folder; a :class:`WeightsError` naming what is wrong."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{folder} is not a segmentation head: no {CONFIG_FILE} in it (make one with "
                           f"`dinolab segment fit WEIGHTS --images DIR --masks DIR --out HEAD`)")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); fit the head again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} file; fit the head again with `dinolab segment fit`")
    return record


def load_segmenter(folder: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> Segmenter:
    """Read a HEAD folder; the backbone from its copy (or ``weights``), checked by fingerprint."""
    from ..models.formats.tensor_files import read_safetensors
    from ..models.preprocess import Preprocess
    from ..models.weights import load_model
    from ..text.aligned import state_fingerprint

    folder = Path(folder)
    rec = read_segmenter_config(folder)
    try:
        source = Path(weights) if weights is not None else folder / rec["backbone"]["copy"]
        backbone = load_model(source, device=device)
        if state_fingerprint(backbone) != rec["backbone"]["fingerprint"]:
            raise WeightsError(f"{source} is not the backbone the head in {folder} was fitted on (its fingerprint "
                               f"differs); give the weights it was fitted with, or fit again")
        head = SegmentationHead(int(rec["in_dim"]), len(rec["classes"]), rec["kind"])
        head.load_state_dict(read_safetensors(folder / HEAD_FILE)[0])
        preprocess = Preprocess.from_dict(rec["preprocess"])
        return Segmenter(backbone, head.to(device).eval(), rec["classes"], int(rec["layers"]), int(rec["image_size"]),
                         preprocess, rec["backbone"]["fingerprint"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{folder} holds a damaged segmentation head ({type(e).__name__}: {e}); fit it again") \
            from None
