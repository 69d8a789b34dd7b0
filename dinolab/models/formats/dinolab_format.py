"""dinolab's own format: ``X.safetensors`` (canonical tensors) next to ``X.json`` (architecture).

``X.json``::

    {"format": "dinolab", "format_version": 1, "architecture": "VisionTransformer",
     "config": {...VisionTransformer kwargs...}, "metadata": {...free-form provenance...},
     "preprocess": {...Preprocess fields: image_size, resize, crop_fraction, interpolation, mean, std,
                    grayscale...}, "dinolab_version": "0.1.0"}

``"preprocess"`` (how the model sees, :mod:`dinolab.models.preprocess`) is optional: files written
before it existed load with the documented defaults (224 px, ImageNet mean / std).

The same JSON is stored in the safetensors header (``__metadata__["dinolab"]``), so the
``.safetensors`` file alone is enough to rebuild the model if the JSON gets lost.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import WeightsError
from ...io import atomic_save_text
from ..preprocess import Preprocess
from ..vit import VisionTransformer
from .tensor_files import read_safetensors, write_safetensors

FORMAT_VERSION = 1


def paths_for(path: str | Path) -> tuple[Path, Path]:
    """``(X.safetensors, X.json)`` for ``X``, ``X.safetensors``, ``X.json`` or a folder (``folder/model.*``)."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", "\\")):
        p = p / "model"
    elif p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def find_in_folder(folder: Path) -> tuple[Path, Path] | None:
    """The one dinolab pair in ``folder`` (``model.*`` preferred), or None."""
    pairs = [paths_for(j) for j in sorted(folder.glob("*.json"))
             if _is_dinolab_json(j) and j.with_suffix(".safetensors").exists()]
    preferred = [pr for pr in pairs if pr[1].stem == "model"]
    return (preferred or pairs or [None])[0]


def is_dinolab_file(path: Path) -> bool:
    """True for a dinolab JSON, or a safetensors file with a dinolab JSON beside it or in its header."""
    if path.suffix == ".json":
        return _is_dinolab_json(path)
    if path.suffix == ".safetensors":
        return _is_dinolab_json(path.with_suffix(".json")) or _header_record(path) is not None
    return False


def unwrap(model: torch.nn.Module) -> VisionTransformer:
    """The :class:`VisionTransformer` inside DDP/FSDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while not isinstance(model, VisionTransformer) and (hasattr(model, "module") or hasattr(model, "_orig_mod")):
        model = getattr(model, "_orig_mod", None) or model.module
    if not isinstance(model, VisionTransformer):
        raise WeightsError(f"expected a dinolab VisionTransformer, got {type(model).__name__}; save the backbone "
                           f"(e.g. model.backbone), not a wrapper or a head")
    return model


def save(model: VisionTransformer, path: str | Path, *, overwrite: bool = False,
         metadata: Mapping[str, Any] | None = None, preprocess: Preprocess | None = None) -> Path:
    """Write ``model`` (weights + architecture + ``preprocess``, default ``model.preprocess``, else the
    defaults); returns the ``.safetensors`` path."""
    model = unwrap(model)
    st, js = paths_for(path)
    if not overwrite:
        for f in (st, js):
            if f.exists():
                raise WeightsError(f"{f} already exists; choose another path or pass overwrite=True "
                                   f"(--force on the command line)")
    from ... import __version__

    record = {"format": "dinolab", "format_version": FORMAT_VERSION, "architecture": type(model).__name__,
              "config": _jsonable(model.config), "metadata": _jsonable(dict(metadata or {})),
              "preprocess": (preprocess or model.preprocess or Preprocess()).to_dict(),
              "dinolab_version": __version__}
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    write_safetensors(st, tensors, {"format": "pt", "dinolab": json.dumps(record, sort_keys=True)})
    atomic_save_text(js, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return st


def read(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any], Preprocess]:
    """``(config, state_dict, metadata, preprocess)`` of a dinolab model."""
    st, js = paths_for(path)
    if not st.exists():
        raise WeightsError(f"{st}: the weights of dinolab model {js} are missing; the .safetensors file must sit "
                           f"next to the .json with the same name")
    tensors, header = read_safetensors(st)
    if js.exists():
        try:
            record = json.loads(js.read_text())
        except ValueError as e:
            raise WeightsError(f"{js}: invalid JSON ({e})") from None
    else:
        record = _parse_record(header.get("dinolab"), st)
    where = js if js.exists() else st
    config = _check_record(record, where)
    if "preprocess" in record:
        preprocess = Preprocess.from_dict(record["preprocess"], str(where))
    else:
        preprocess = Preprocess(source=f"dinolab default: {where.name} records no preprocessing (written by an "
                                       f"older dinolab); give --image-size if the model was trained at another size")
    return config, tensors, record.get("metadata", {}), preprocess


def _check_record(record: Any, where: Path) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("format") != "dinolab":
        raise WeightsError(f"{where}: not a dinolab model description (no \"format\": \"dinolab\")")
    version = record.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(f"{where}: format_version {version!r} is newer than this dinolab understands "
                           f"({FORMAT_VERSION}); upgrade dinolab (pip install -U dinolab)")
    if record.get("architecture", "VisionTransformer") != "VisionTransformer":
        raise WeightsError(f"{where}: architecture {record.get('architecture')!r} is not supported")
    config = record.get("config")
    if not isinstance(config, dict):
        raise WeightsError(f"{where}: no \"config\" object with the model's architecture")
    known = set(inspect.signature(VisionTransformer.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise WeightsError(f"{where}: unknown architecture option(s) {', '.join(unknown)} (written by a newer "
                           f"dinolab?); upgrade dinolab or remove them from the JSON")
    return config


def _is_dinolab_json(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == "dinolab"
    except (ValueError, OSError, AttributeError):
        return False


def _header_record(path: Path) -> dict | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get("dinolab")
        return json.loads(text) if text else None
    except Exception:  # any unreadable header simply means "not ours"; the real reader reports errors
        return None


def _parse_record(text: str | None, where: Path) -> Any:
    if not text:
        raise WeightsError(f"{where}: no dinolab architecture JSON next to it and none in its header")
    return json.loads(text)


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, tuple):
            v = list(v)
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[str(k)] = v
    return out
