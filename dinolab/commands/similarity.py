"""Cosine similarity of the patch under a pixel to every patch of the image and of reference images.

DINOv3's dense-feature picture: the last block's patch tokens, L2-normalised; the patch under
pixel X,Y of IMAGE (in IMAGE's own pixels, 0,0 = top left) is compared with every patch of IMAGE
and of each --ref image. Maps are computed on the patch grid and upsampled bilinearly for display;
all maps of one point share one colour scale. For point k (1, 2, ...) writes into DIR:
  <stem>_point<k>.png           heat map over IMAGE, the point marked in red
  <stem>_point<k>_<ref>.png     heat map over each reference image
  <stem>_similarity_sheet.png   every picture, one row per point
The default --image-size is twice the model's recorded size (more patches; printed).
Examples:
  dinolab similarity run/model.safetensors cat.jpg --point 120,80 --out sim/
  dinolab similarity run/model.safetensors cat.jpg --point 120,80 --point 30,200 --ref cat2.jpg --ref dog.jpg \\
      --out sim/ --image-size 672
"""

from __future__ import annotations

import argparse

from ._visual import add_model_arguments


def parse_point(text: str) -> tuple[float, float]:
    """``"X,Y"`` -> ``(x, y)``; an argparse error naming the value otherwise."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y (two pixel coordinates, e.g. 120,80)") from None
    return x, y


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="any weights file or folder dinolab.load_model reads")
    parser.add_argument("image", metavar="IMAGE", help="the image the points are on (a file, or one image of a built-in set: "
                        "builtin:shapes?n=8/shapes_3)")
    parser.add_argument("--point", action="append", required=True, type=parse_point, metavar="X,Y",
                        help="pixel of IMAGE (x to the right, y down); repeat for several points")
    parser.add_argument("--ref", action="append", default=[], metavar="IMAGE",
                        help="reference image(s) to compare with (files, folders or builtin:NAME[?n=N]); repeatable")
    add_model_arguments(parser, dense=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..data.builtin import is_builtin
    from ..data.decode import UnreadableImage
    from ..device import autocast
    from ..errors import DataError
    from ..eval.dense import patch_similarity, point_to_patch, similarity_pictures
    from ..eval.viz import contact_sheet, save_png, unique_stems
    from ._visual import _load_input, check_outputs, image_inputs, load_for_inference, report_unreadable

    one_builtin = is_builtin(args.image) and "/" in args.image  # builtin:shapes?n=8/shapes_3, as pca names it
    query_paths = [args.image] if one_builtin else image_inputs([args.image])
    if len(query_paths) != 1:
        raise DataError(f"IMAGE must be one image, {args.image} holds {len(query_paths)}; compare with the others "
                        f"through --ref")
    ref_paths = image_inputs(args.ref) if args.ref else []
    stems = unique_stems(query_paths + ref_paths)
    out, q = Path(args.out), stems[0]
    names = [[f"{q}_point{k}.png"] + [f"{q}_point{k}_{r}.png" for r in stems[1:]]
             for k in range(1, len(args.point) + 1)]
    check_outputs([out / n for row in names for n in row] + [out / f"{q}_similarity_sheet.png"], args.force)
    try:
        query = _load_input(query_paths[0], None)  # full size: points are in its pixels
    except UnreadableImage as e:
        raise DataError(f"cannot read IMAGE {e.path}: {e.reason}") from None
    except (ValueError, IndexError):
        raise DataError(f"{args.image} names no image of a built-in set; write builtin:NAME?n=N/NAME_K, e.g. "
                        f"builtin:shapes?n=8/shapes_3") from None
    for point in args.point:  # before loading the model: a point outside the image is a typo
        point_to_patch(point, tuple(query.shape[-2:]), tuple(query.shape[-2:]), 1)
    model, device, precision, preprocess = load_for_inference(args, "similarity", dense=True)
    print(f"similarity: patch grid from a {preprocess.image_size} px shorter side ({model.patch_size} px patches)")
    refs, ref_stems, bad = [], [], []
    for path, stem in zip(ref_paths, stems[1:]):
        try:
            refs.append(_load_input(path, None))
            ref_stems.append(stem)
        except UnreadableImage as e:
            bad.append((e.path, e.reason))
    with torch.no_grad(), autocast(device, precision):
        results, resized = patch_similarity(model, query, args.point, refs, image_size=preprocess.image_size,
                                            preprocess=preprocess, batch_size=args.batch_size)
    tiles, labels = [], []
    for k, result in enumerate(results, start=1):
        pictures = similarity_pictures(result, resized, tuple(query.shape[-2:]))
        files = [f"{q}_point{k}.png"] + [f"{q}_point{k}_{r}.png" for r in ref_stems]
        for name, pic in zip(files, pictures):
            save_png(out / name, pic)
        tiles += pictures
        x, y = result.point
        labels += [f"{q} ({x:g},{y:g})"] + ref_stems
    save_png(out / f"{q}_similarity_sheet.png", contact_sheet(tiles, labels, columns=len(resized)))
    report_unreadable(bad, len(ref_paths), what="reference images")
    print(f"wrote similarity maps of {len(results)} point(s) over {len(resized)} image(s) to {out}")
    return 0
