"""Unsupervised object masks (attention, patch PCA or LOST-style similarity); Jaccard when masks are known.

For every image of DATA (a folder, a text file of paths, or builtin:shapes) writes
<stem>_<method>.png into DIR (white = object, at the image's own size), objects_sheet.png
(the first images with their masks) and, when DATA has ground-truth masks, prints the mean
Jaccard index of each method next to centred-box baselines and saves them to objects.json.
Methods (see dinolab.eval.objects): attention = mean-head [CLS] attention keeping 60% of its
mass; pca = side of the first principal component away from the image border; similarity =
LOST seed expansion; all = the three. Example:
  dinolab objects run/model.safetensors builtin:shapes?n=200 --out objects/ --method all
"""

from __future__ import annotations

import argparse

from ._visual import add_model_arguments

METHOD_CHOICES = ("attention", "pca", "similarity", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="any weights file or folder dinolab.load_model reads")
    parser.add_argument("data", metavar="DATA", help="image folder, text file of paths, or builtin:shapes[?n=...]")
    add_model_arguments(parser)
    parser.add_argument("--method", choices=METHOD_CHOICES, default="attention", help="default: attention")
    parser.add_argument("--keep", type=float, default=0.6,
                        help="attention method: share of the attention mass kept (default 0.6)")
    parser.add_argument("--heads", choices=("mean", "vote", "union"), default="mean",
                        help="attention method: threshold the mean over heads (default), or keep patches that a "
                             "majority of / any of the per-head masks keep")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--sheet-size", type=int, default=12, metavar="N",
                        help="images shown in objects_sheet.png (default 12)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..data import ImageDataset
    from ..errors import ConfigError, DataError
    from ..eval.objects import METHODS, evaluate_objects
    from ..eval.viz import contact_sheet, mask_image, mask_overlay, save_png, to_hwc, unique_stems
    from ..io import atomic_save_text
    from ._visual import check_outputs, load_for_inference, report_unreadable

    if not 0.0 < args.keep <= 1.0:
        raise ConfigError(f"--keep must be in (0, 1], got {args.keep}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    dataset = ImageDataset(args.data)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    if n == 0:
        raise DataError(f"no images found in {args.data}; give a folder of images, a text file of image paths "
                        f"or builtin:shapes")
    methods = list(METHODS) if args.method == "all" else [args.method]
    out = Path(args.out)
    stems = unique_stems(dataset.paths[:n])
    check_outputs([out / f"{s}_{m}.png" for s in stems for m in methods]
                  + [out / "objects_sheet.png", out / "objects.json"], args.force)
    model, device, precision, preprocess = load_for_inference(args, "objects")

    tiles, labels, shown = [], [], []

    def write(i, image, masks, gt) -> None:  # the masks of image i, and the first ones on the sheet
        for m, mask in masks.items():
            save_png(out / f"{stems[i]}_{m}.png", mask_image(mask.numpy()))
        if len(shown) < args.sheet_size:
            shown.append(i)
            rgb = to_hwc(image)
            tiles.extend([rgb] + [mask_overlay(rgb, mask.numpy()) for mask in masks.values()])
            labels.extend([stems[i]] + list(masks))
            if gt is not None:
                tiles.append(mask_overlay(rgb, gt.numpy(), color=(40, 220, 40)))
                labels.append("ground truth")

    res = evaluate_objects(model, dataset, methods, preprocess=preprocess, keep=args.keep, heads=args.heads,
                           limit=n, device=device, precision=precision, progress=args.progress, on_image=write)
    if tiles:
        columns = len(methods) + 1 + (1 if res.n_scored else 0)
        save_png(out / "objects_sheet.png", contact_sheet(tiles, labels, columns=columns * (2 if columns <= 3 else 1)))

    if res.n_scored:
        base = res.baselines
        results = {"images": res.n_scored, "image_size": preprocess.image_size, "weights": str(args.weights),
                   "keep": args.keep, "heads": args.heads, "jaccard": res.jaccard,
                   "baselines": {"centred box 50% area": base["box_jaccard"],
                                 f"best centred box ({base['best_box_area']:.0%} area, chosen on the ground truth)":
                                     base["best_box_jaccard"]}}
        atomic_save_text(out / "objects.json", json.dumps(results, indent=2) + "\n")
        print(f"mean Jaccard over {res.n_scored} image(s) with ground-truth masks:")
        for name, value in list(results["jaccard"].items()) + list(results["baselines"].items()):
            print(f"  {name:<62} {value:.3f}")
    else:
        print("no ground-truth masks in DATA: masks written, nothing to score")
    report_unreadable(res.bad, n)
    print(f"wrote object masks of {n - len(res.bad)} image(s) to {out}")
    return 0
