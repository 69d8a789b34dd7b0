"""Reading tensor files without running code from them, and writing safetensors atomically.

``.pth`` files are read with ``torch.load(weights_only=True)``: only tensors, plain containers and
numbers are rebuilt, so a file that would call arbitrary Python on unpickling is refused before
anything runs. The one class allowed besides is ``argparse.Namespace``, which DINO v1 stores as
``args`` in its training checkpoints (rebuilding it only sets attributes).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import WeightsError
from ...io import atomic_write

_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"\x93NUMPY", "a NumPy .npy array"))


def file_head(path: str | os.PathLike, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""  # the reader that follows names the error


def is_safetensors_content(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts like a safetensors file: u64 header length, then ``{``."""
    return len(head) > 8 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < 100_000_000


def non_weights_content(path: str | os.PathLike) -> str | None:
    """What ``path`` is when its first bytes show it is no weights file (``"a PNG image"``, ``"an HTML page"``,
    ...); None when it may be one. PyTorch files are zip archives (``PK``) or pickles (``\\x80``); safetensors
    files start with their header length and ``{``."""
    head = file_head(path)
    if not head or head.startswith((b"PK", b"\x80")) or is_safetensors_content(head):
        return None
    if head[8:12] in (b"WEBP", b"AVIF") or head[4:8] == b"ftyp":
        return "an image (WebP/AVIF/HEIC)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML/XML page (a failed download?)"
    if text.startswith((b"{", b"[")):
        return "a JSON file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a PyTorch or safetensors file (neither a zip archive, a pickle nor a safetensors header)"


def refuse_non_weights(path: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` when ``path``'s content is plainly not a weights file (see :func:`non_weights_content`)."""
    what = non_weights_content(path)
    if what is not None:
        raise WeightsError(f"{path}: not a weights file: its content is {what}. WEIGHTS must be a dinolab "
                           f".safetensors (+ .json), an official DINO/DINOv2/DINOv3 .pth, or a Hugging Face model "
                           f"folder; check the argument order (WEIGHTS comes before the images)")


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that name the file and the fix."""
    refuse_non_weights(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()), str(e).splitlines()[0])
        raise WeightsError(
            f"{path}: refused to load: the file contains Python objects that would run code when unpickled "
            f"({reason}). dinolab only reads tensors (torch.load with weights_only=True) and never executes a "
            f"weights file. Fix: if you trust the file, re-save just its state dict in a trusted environment "
            f"(torch.save(model.state_dict(), 'clean.pth')) or convert it to safetensors") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {str(e).splitlines()[0]}); "
                           f"check that the download is complete and that this is a .pth/.pt checkpoint") from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(tensors, metadata)`` of a safetensors file (tensors on CPU)."""
    from safetensors import SafetensorError, safe_open

    refuse_non_weights(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e}); check that the file is complete") from None


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` in the safetensors layout, atomically and one tensor at a time.

    Unlike ``safetensors.torch.save`` this never holds a second copy of the whole model in memory.
    Layout: little-endian u64 header length, JSON header (names, dtypes, shapes, byte offsets, padded
    to 8 bytes), then the raw little-endian tensor bytes in header order.
    """
    names = sorted(tensors)
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in _ST_DTYPES:
            raise WeightsError(f"cannot write tensor {name!r} of dtype {t.dtype} to safetensors")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with atomic_write(Path(path), "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            t = tensors[name].detach().to("cpu").contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)


def refuse_non_float(where: str | os.PathLike, sd: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`WeightsError` naming the tensors of ``sd`` that are not floating point (model weights
    are; integer or bool tensors mean a quantised or damaged file)."""
    not_float = [f"{k} ({str(v.dtype).replace('torch.', '')})" for k, v in sd.items() if not v.is_floating_point()]
    if not_float:
        raise WeightsError(f"{where}: {len(not_float)} tensor(s) are not floating point: {', '.join(not_float[:3])}"
                           f"{' ...' if len(not_float) > 3 else ''}; quantised or damaged weights cannot be loaded, "
                           f"use the float checkpoint")
