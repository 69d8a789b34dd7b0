"""Plumbing shared by the picture commands (``attention``, ``objects``, ``pca``): options, inputs, model.

Not a sub-command (the leading underscore keeps it out of ``dinolab --help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

VISUAL_OPTIONS = ("image_size", "mean", "std", "device", "precision", "progress")


DENSE_SIZE_HELP = ("shorter side of the image fed to the model (default: twice the size the model records, rounded "
                   "to whole patches, e.g. 448 px for official 224 px weights: dense maps want more patches; the "
                   "size used is printed)")


def add_model_arguments(parser: argparse.ArgumentParser, dense: bool = False) -> None:
    """``--out`` (required), the inference options of one-image-at-a-time commands, ``--force``.

    Images are resized so that the shorter side is about ``--image-size`` (default: the model's), both
    sides multiples of the patch size (aspect kept).
    """
    from ..eval.options import add_inference_arguments

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    group = add_inference_arguments(parser, only=VISUAL_OPTIONS + (("batch_size",) if dense else ()),
                                    title="running the model (the shorter side of each image is resized to about "
                                          "the image size, aspect kept)")
    if dense:
        dense_size_help(group)
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def dense_size_help(group: argparse._ArgumentGroup) -> None:
    """Say in ``--image-size``'s help that the dense default (twice the model's size) applies."""
    for action in group._group_actions:
        if action.dest == "image_size":
            action.help = DENSE_SIZE_HELP


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


def load_for_inference(args: argparse.Namespace, command: str, dense: bool = False):
    """Load ``args.weights`` in eval mode on ``--device``; returns ``(model, device, precision, preprocess)``
    and says on stderr which preprocessing is used. ``dense``: without ``--image-size`` the size is
    :func:`dinolab.eval.dense.dense_image_size` (twice the model's) instead of the model's own."""
    from .. import load_model
    from ..device import resolve_device, resolve_precision
    from ..eval.options import InferenceOptions

    options = InferenceOptions.from_args(args)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    model = load_model(args.weights, device=device).eval()
    if dense and options.image_size is None:
        from ..eval.dense import dense_image_size

        options.image_size = dense_image_size(model)
    return model, device, precision, options.preprocess_for(model, announce=command)


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


def _load_input(path: str, min_size: int | None):
    """``(3, H, W)`` uint8 image of a path from :func:`image_inputs` (a file, or an image of a built-in set)."""
    import torch

    from ..data.builtin import is_builtin, load_builtin
    from ..data.decode import decode_image

    if is_builtin(path):
        spec, _, item = path.rpartition("/")
        return torch.from_numpy(load_builtin(spec).images[int(item.rsplit("_", 1)[1])].copy())
    return decode_image(path, min_size=min_size)


def prepared_images(paths: Sequence[str], stems: Sequence[str], patch_size: int, preprocess,
                    bad: list[tuple[str, str]], desc: str, progress: bool = True):
    """Yield ``(stem, resized uint8 3×H×W, normalised float 3×H×W)`` per readable image.

    Unreadable files are appended to ``bad`` as ``(path, reason)`` and skipped.
    """
    from tqdm import tqdm

    from ..data.decode import UnreadableImage
    from ..eval.viz import prepare_image

    for path, stem in tqdm(list(zip(paths, stems)), desc=desc, disable=None if progress else True):
        try:
            image = _load_input(path, preprocess.image_size)
        except UnreadableImage as e:
            bad.append((e.path, e.reason))
            continue
        resized, x = prepare_image(image, patch_size, preprocess=preprocess)
        yield stem, resized, x
