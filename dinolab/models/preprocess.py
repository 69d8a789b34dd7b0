"""How a model sees: the input size, resize rule and normalisation it was trained or released with.

Every model :func:`dinolab.load_model` returns carries a :class:`Preprocess` as ``model.preprocess``:

=====================================  ================================================================
dinolab ``.safetensors`` + ``.json``   the ``"preprocess"`` entry of the JSON (``dinolab train`` records
                                       its global crop size and training normalisation); files written
                                       before it existed get the defaults below, with ``source`` saying so
official DINO / DINOv2 / DINOv3 .pth   224 px, shorter side to 256 then centre crop (bicubic), ImageNet
                                       mean / std (the official k-NN / linear evaluation transforms);
                                       DINOv3 satellite weights (``sat493m`` in the file name: tensors
                                       cannot tell) mean (0.430, 0.411, 0.296), std (0.213, 0.156, 0.143)
Hugging Face folders                   the folder's ``preprocessor_config.json`` when present; otherwise
                                       the processor the converted checkpoints ship with: DINOv2
                                       ``BitImageProcessor`` (shortest edge 256, bicubic, centre crop 224),
                                       DINOv3 ``DINOv3ViTImageProcessor`` (224 x 224, bilinear, no crop)
=====================================  ================================================================

Resize rules (``resize``): ``"crop"`` resizes the shorter side to ``round(image_size / crop_fraction)``
then takes the centre ``image_size`` square (``crop_fraction`` 0.875 = 224/256, the DINO protocol);
``"stretch"`` resizes straight to ``image_size x image_size`` (aspect not kept). ``grayscale`` models
get the ITU-R 601 luma of each image in all three channels before normalisation.

Examples:
    >>> p = Preprocess(image_size=32)
    >>> p.normalize(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8))[0, :, 0, 0].tolist()  # (1 - mean) / std
    [2.248908281326294, 2.4285714626312256, 2.640000104904175]
    >>> Preprocess.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAT493M_MEAN = (0.430, 0.411, 0.296)  # DINOv3 satellite (SAT-493M) weights
SAT493M_STD = (0.213, 0.156, 0.143)
RESIZE_RULES = ("crop", "stretch")
INTERPOLATIONS = ("bicubic", "bilinear")
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing a model expects (see the module docstring).

    Attributes:
        image_size: side of the square fed to the model, in pixels.
        resize: ``"crop"`` or ``"stretch"``.
        crop_fraction: for ``"crop"``, ``image_size`` / the resized shorter side.
        interpolation: ``"bicubic"`` or ``"bilinear"`` (antialiased).
        mean, std: per-channel normalisation of [0, 1] RGB.
        grayscale: the model was trained on grayscale images.
        source: where these values come from (for messages; not stored, not compared).
    """

    image_size: int = 224
    resize: str = "crop"
    crop_fraction: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    grayscale: bool = False
    source: str = field(default="dinolab default", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        problems = []
        if not (isinstance(self.image_size, int) and self.image_size >= 1):
            problems.append(f"image_size={self.image_size!r} must be a positive integer")
        if self.resize not in RESIZE_RULES:
            problems.append(f"resize={self.resize!r} must be one of {', '.join(RESIZE_RULES)}")
        if not 0 < self.crop_fraction <= 1:
            problems.append(f"crop_fraction={self.crop_fraction!r} must be in (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation={self.interpolation!r} must be one of {', '.join(INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean={self.mean}, std={self.std} must be 3 values each, std > 0")
        if problems:
            raise ValueError("; ".join(problems))

    # -- applying it ----------------------------------------------------------------------------

    def resize_image(self, image: torch.Tensor) -> torch.Tensor:
        """``uint8 (3, H, W)`` -> ``uint8 (3, image_size, image_size)`` by the resize rule."""
        from ..data.loader import resize_eval, resize_exact

        if self.resize == "stretch":
            return resize_exact(image, (self.image_size, self.image_size), self.interpolation)
        return resize_eval(image, self.image_size, crop_fraction=self.crop_fraction, interpolation=self.interpolation)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (..., 3, H, W)`` -> float ``(..., 3, H, W)``: [0, 1], grayscale if asked, then (x - mean) / std."""
        x = images.float() / 255.0
        if self.grayscale:
            luma = torch.tensor(_LUMA, device=x.device).view(3, 1, 1)
            x = (x * luma).sum(dim=-3, keepdim=True).expand_as(x)
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x - mean) / std

    def replace(self, **changes: Any) -> Preprocess:
        """A copy with ``changes`` (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        """One line: size, resize rule, normalisation and where they come from."""
        rule = (f"shorter side {round(self.image_size / self.crop_fraction)} then centre crop"
                if self.resize == "crop" else "stretched to a square")
        norm = ("ImageNet mean/std" if (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD) else
                "SAT-493M mean/std" if (self.mean, self.std) == (SAT493M_MEAN, SAT493M_STD) else
                f"mean {_fmt(self.mean)} std {_fmt(self.std)}")
        gray = ", grayscale" if self.grayscale else ""
        return f"image size {self.image_size} px ({rule}, {self.interpolation}), {norm}{gray} [{self.source}]"

    # -- storing it -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (without ``source``)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "", source: str = "") -> Preprocess:
        """Read :meth:`to_dict` output; unknown keys or bad values raise :class:`WeightsError` naming ``where``."""
        if not isinstance(d, Mapping):
            raise WeightsError(f"{where}: \"preprocess\" must be an object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WeightsError(f"{where}: unknown preprocess key(s) {', '.join(unknown)} (written by a newer "
                               f"dinolab?); valid: {', '.join(sorted(known))}")
        try:
            return cls(**dict(d), source=source or f"recorded in {where}")
        except (TypeError, ValueError) as e:
            raise WeightsError(f"{where}: invalid \"preprocess\": {e}; fix the values or remove the entry "
                               f"(then the defaults apply)") from None


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def resolve_preprocess(model: Any, *, image_size: int | None = None, mean: Any = None, std: Any = None,
                       preprocess: Preprocess | None = None) -> Preprocess:
    """The preprocessing to feed ``model``: ``preprocess``, else ``model.preprocess``, else the defaults;
    then the given overrides (each not None wins), with ``source`` naming what was overridden."""
    base = preprocess or getattr(model, "preprocess", None) or Preprocess(source="dinolab default: the model records "
                                                                                 "no preprocessing")
    changed = [name for name, v in (("image size", image_size), ("mean", mean), ("std", std)) if v is not None]
    if not changed:
        return base
    return base.replace(image_size=image_size, mean=None if mean is None else tuple(mean),
                        std=None if std is None else tuple(std),
                        source=f"{' and '.join(changed)} given; otherwise {base.source}")


# -- documented defaults of released weights ----------------------------------------------------

def release_defaults(family: str | None, path: Any, fmt: str = "official") -> Preprocess:
    """The preprocessing of released weights without a processor file (see the module docstring).

    ``family``: ``"dino"``, ``"dinov2"``, ``"dinov2_reg"``, ``"dinov3"`` or None; ``fmt``: ``"official"``
    or ``"hf"``; ``path``: the weights (its name tells satellite weights apart).
    """
    name = str(path).lower()
    if fmt == "hf" and family == "dinov3":
        base = Preprocess(resize="stretch", interpolation="bilinear",
                          source="default of DINOv3ViTImageProcessor (no preprocessor_config.json)")
    elif fmt == "hf":
        base = Preprocess(source="default of the DINOv2 BitImageProcessor (no preprocessor_config.json)")
    else:
        what = {"dino": "DINO", "dinov2": "DINOv2", "dinov2_reg": "DINOv2", "dinov3": "DINOv3"}.get(family or "")
        base = Preprocess(source=f"default of the official {what} evaluation" if what else
                          "dinolab default (architecture family unknown)")
    if "sat493m" in name:
        base = base.replace(mean=SAT493M_MEAN, std=SAT493M_STD,
                            source=base.source + "; SAT-493M normalisation (satellite weights, from the file name)")
    return base


_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL codes in preprocessor_config.json


def from_hf_processor(cfg: Mapping[str, Any], where: str) -> Preprocess:
    """A :class:`Preprocess` from a Hugging Face ``preprocessor_config.json`` (BitImageProcessor or
    DINOv3ViTImageProcessor); the exact dinolab record when :func:`to_hf_processor` wrote the file."""
    if isinstance(cfg.get("dinolab_preprocess"), Mapping):
        return Preprocess.from_dict(cfg["dinolab_preprocess"], where)
    size, crop = cfg.get("size") or {}, cfg.get("crop_size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    interpolation = _RESAMPLE.get(cfg.get("resample", 3), "bicubic")
    mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    if cfg.get("do_normalize", True) is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    try:
        if cfg.get("do_center_crop") and crop:
            image_size = int(crop["height"])
            short = int(size.get("shortest_edge", image_size))
            return Preprocess(image_size, "crop", image_size / short, interpolation, tuple(mean), tuple(std),
                              source=f"read from {where}")
        if "height" in size:
            return Preprocess(int(size["height"]), "stretch", 0.875, interpolation, tuple(mean), tuple(std),
                              source=f"read from {where}")
        return Preprocess(int(size["shortest_edge"]), "crop", 1.0, interpolation, tuple(mean), tuple(std),
                          source=f"read from {where} (shortest edge, then centre crop)")
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{where}: cannot read the image size / normalisation from this processor config "
                           f"({e!r}); fix or remove the file (then the documented defaults apply)") from None


def to_hf_processor(preprocess: Preprocess) -> dict[str, Any]:
    """``preprocessor_config.json`` content equivalent to ``preprocess`` (plus the exact dinolab record)."""
    p = preprocess
    cfg: dict[str, Any] = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                           "image_mean": list(p.mean), "image_std": list(p.std), "rescale_factor": 1 / 255,
                           "resample": {v: k for k, v in _RESAMPLE.items()}[p.interpolation],
                           "dinolab_preprocess": p.to_dict()}
    if p.resize == "crop":
        cfg.update(image_processor_type="BitImageProcessor", do_center_crop=True,
                   size={"shortest_edge": round(p.image_size / p.crop_fraction)},
                   crop_size={"height": p.image_size, "width": p.image_size})
    else:
        cfg.update(image_processor_type="BitImageProcessor", do_center_crop=False,
                   size={"height": p.image_size, "width": p.image_size})
    return cfg
