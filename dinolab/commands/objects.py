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

    import torch
    from tqdm import tqdm

    from ..data import ImageDataset
    from ..data.decode import UnreadableImage
    from ..device import autocast
    from ..errors import ConfigError, DataError
    from ..eval.objects import METHODS, box_baselines, gt_mask, jaccard, object_masks
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
    model, device, precision = load_for_inference(args)

    scores: dict[str, list[float]] = {m: [] for m in methods}
    gts: list[torch.Tensor] = []
    tiles, labels, bad = [], [], []
    shown = 0
    for i in tqdm(range(n), desc="objects", disable=None):
        try:
            image = dataset.load(i, min_size=args.image_size)
        except UnreadableImage as e:
            bad.append((e.path, e.reason))
            continue
        with torch.no_grad(), autocast(device, precision):
            masks = object_masks(model, image, methods, image_size=args.image_size, keep=args.keep, heads=args.heads)
        for m, mask in masks.items():
            save_png(out / f"{stems[i]}_{m}.png", mask_image(mask.numpy()))
        gt = dataset.masks(i)  # None when DATA has no masks
        if gt is not None:
            gt = gt_mask(gt)
            gts.append(gt)
            for m, mask in masks.items():
                scores[m].append(jaccard(mask, gt))
        if shown < args.sheet_size:
            shown += 1
            rgb = to_hwc(image)
            tiles += [rgb] + [mask_overlay(rgb, mask.numpy()) for mask in masks.values()]
            labels += [stems[i]] + list(masks)
            if gt is not None:
                tiles.append(mask_overlay(rgb, gt.numpy(), color=(40, 220, 40)))
                labels.append("ground truth")
    if tiles:
        columns = len(methods) + 1 + (1 if gts else 0)
        save_png(out / "objects_sheet.png", contact_sheet(tiles, labels, columns=columns * (2 if columns <= 3 else 1)))

    if gts:
        base = box_baselines(gts)
        results = {"images": len(gts), "image_size": args.image_size, "weights": str(args.weights),
                   "keep": args.keep, "heads": args.heads,
                   "jaccard": {m: float(sum(v) / len(v)) for m, v in scores.items()},
                   "baselines": {"centred box 50% area": base["box_jaccard"],
                                 f"best centred box ({base['best_box_area']:.0%} area, chosen on the ground truth)":
                                     base["best_box_jaccard"]}}
        atomic_save_text(out / "objects.json", json.dumps(results, indent=2) + "\n")
        print(f"mean Jaccard over {len(gts)} image(s) with ground-truth masks:")
        for name, value in list(results["jaccard"].items()) + list(results["baselines"].items()):
            print(f"  {name:<62} {value:.3f}")
    else:
        print("no ground-truth masks in DATA: masks written, nothing to score")
    report_unreadable(bad, n)
    print(f"wrote object masks of {n - len(bad)} image(s) to {out}")
    return 0
