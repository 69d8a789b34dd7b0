"""Plumbing shared by the picture commands (``attention``, ``objects``, ``pca``): options, inputs, model.

Not a sub-command (the leading underscore keeps it out of ``dinolab --help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out`` (required), ``--image-size``, ``--device``, ``--precision``, ``--force``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--image-size", type=int, default=224, metavar="PX",
                        help="resize so the shorter side is about PX, both sides multiples of the patch size "
                             "(aspect kept; default 224)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, bf16 or fp16")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def image_inputs(inputs: Sequence[str]) -> list[str]:
    """Image paths from files, folders and built-in sets given on the command line; a clear error when there
    are none. Image ``i`` of a built-in set ``SPEC`` is named ``SPEC/<set>_<i>`` (see :func:`_load_input`)."""
    from ..data.builtin import is_builtin, load_builtin
    from ..errors import DataError
    from ..eval.viz import image_paths

    missing = [p for p in inputs if not is_builtin(p) and not os.path.exists(p)]
    if missing:
        raise DataError(f"{missing[0]} does not exist; give image files, folders of images or a built-in set "
                        f"(builtin:shapes?n=8)")
    paths = []
    for item in inputs:
        if is_builtin(item):
            data = load_builtin(item)
            width = len(str(len(data.images) - 1))
            paths += [f"{item}/{data.name}_{i:0{width}d}" for i in range(len(data.images))]
        else:
            paths += image_paths([item])
    if not paths:
        raise DataError(f"no images found in {', '.join(inputs)}; give image files or folders that contain images")
    return paths


def check_outputs(paths: Iterable[Path], force: bool) -> None:
    """Refuse before any work if an output exists and ``--force`` was not given."""
    from ..io import check_writable

    for p in paths:
        check_writable(p, force=force)


def load_for_inference(args: argparse.Namespace):
    """Load ``args.weights`` in eval mode on ``args.device``; returns ``(model, device, precision)``."""
    from .. import load_model
    from ..device import resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    if args.image_size < 1:
        from ..errors import ConfigError
        raise ConfigError(f"--image-size must be a positive number of pixels, got {args.image_size}")
    model = load_model(args.weights, device=device).eval()
    return model, device, precision


def report_unreadable(bad: list[tuple[str, str]], total: int, what: str = "images") -> None:
    """Name unreadable inputs on stderr; raise a DataError (exit 2) if there were any."""
    from ..errors import DataError

    if not bad:
        return
    for path, reason in bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    done = total - len(bad)
    raise DataError(f"{len(bad)} of {total} {what} could not be read (listed above; outputs were written for the "
                    f"other {done}); fix or remove those files and run again")


def _load_input(path: str, min_size: int):
    """``(3, H, W)`` uint8 image of a path from :func:`image_inputs` (a file, or an image of a built-in set)."""
    import torch

    from ..data.builtin import is_builtin, load_builtin
    from ..data.decode import decode_image

    if is_builtin(path):
        spec, _, item = path.rpartition("/")
        return torch.from_numpy(load_builtin(spec).images[int(item.rsplit("_", 1)[1])].copy())
    return decode_image(path, min_size=min_size)


def prepared_images(paths: Sequence[str], stems: Sequence[str], patch_size: int, image_size: int,
                    bad: list[tuple[str, str]], desc: str):
    """Yield ``(stem, resized uint8 3×H×W, normalised float 3×H×W)`` per readable image.

    Unreadable files are appended to ``bad`` as ``(path, reason)`` and skipped.
    """
    from tqdm import tqdm

    from ..data.decode import UnreadableImage
    from ..eval.viz import prepare_image

    for path, stem in tqdm(list(zip(paths, stems)), desc=desc, disable=None):
        try:
            image = _load_input(path, image_size)
        except UnreadableImage as e:
            bad.append((e.path, e.reason))
            continue
        resized, x = prepare_image(image, patch_size, image_size)
        yield stem, resized, x
