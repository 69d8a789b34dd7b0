"""First three principal components of patch features as RGB pictures, background removed.

DINOv2's visualisation: PCA of the patch features; the first component separates foreground
from background (the side holding most border patches is background, shown black); a second
PCA on the foreground patches gives red, green and blue. An image whose split fails (no
foreground patch, or every patch foreground) is named and shown whole. For every IMAGE writes
<stem>_pca.png into DIR, and pca_sheet.png with each image next to its picture.
--joint fits one PCA on all images together, so the same part gets the same colour everywhere.
Example:
  dinolab pca run/model.safetensors photos/ --out pca/ --joint
"""

from __future__ import annotations

import argparse

from ._visual import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="any weights file or folder dinolab.load_model reads")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders of images or builtin:NAME[?n=N]")
    add_model_arguments(parser)
    parser.add_argument("--joint", action="store_true",
                        help="fit one PCA on the patches of all images together (comparable colours)")
    parser.add_argument("--keep-background", action="store_true",
                        help="do not threshold the first component; colour every patch")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..device import autocast
    from ..eval.pca import patch_features, pca_rgb
    from ..eval.viz import contact_sheet, save_png, to_hwc, unique_stems, upsample
    from ._visual import check_outputs, image_inputs, load_for_inference, prepared_images, report_unreadable

    paths = image_inputs(args.images)
    out = Path(args.out)
    stems = unique_stems(paths)
    check_outputs([out / f"{s}_pca.png" for s in stems] + [out / "pca_sheet.png"], args.force)
    model, device, precision, preprocess = load_for_inference(args, "pca")

    done: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # stem, resized image, h×w×D features
    bad: list[tuple[str, str]] = []
    for stem, resized, x in prepared_images(paths, stems, model.patch_size, preprocess, bad, "pca",
                                               args.progress):
        with torch.no_grad(), autocast(device, precision):
            done.append((stem, resized, patch_features(model, x)))

    remove_bg = not args.keep_background
    if args.joint and done:
        fits = [pca_rgb([f for _, _, f in done], remove_background=remove_bg)]
    else:
        fits = [pca_rgb([f], remove_background=remove_bg) for _, _, f in done]
    pictures = [p for fit in fits for p in fit.pictures]
    failed = [stem for (stem, _, _), bad in zip(done, [b for fit in fits for b in fit.split_failed]) if bad]
    if failed:
        print(f"note: the first component did not split foreground from background in {', '.join(failed)} "
              f"(no patch or every patch came out foreground); showing the full PCA picture there")
    tiles, labels = [], []
    for (stem, resized, _), pic in zip(done, pictures):
        size = (resized.shape[1], resized.shape[2])
        rgb = upsample(pic.permute(2, 0, 1), size, mode="nearest").permute(1, 2, 0)
        rgb8 = (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
        save_png(out / f"{stem}_pca.png", rgb8)
        tiles += [to_hwc(resized), rgb8]
        labels += [stem, f"{stem} pca"]
    if tiles:
        save_png(out / "pca_sheet.png", contact_sheet(tiles, labels, columns=4))
    report_unreadable(bad, len(paths))
    print(f"wrote PCA pictures of {len(done)} image(s) to {out}")
    return 0
