"""Semantic segmentation on a frozen backbone's patch tokens: fit a head, predict masks, score them (mIoU).

segment fit: DINOv2's linear protocol (BatchNorm + 1x1 convolution on the last block's patch tokens,
--layers 4 concatenates the last four; logits upsampled bilinearly to the mask; cross-entropy ignoring
255; random rescale 0.5-2x, crop and flip), or --head logreg: logistic regression on the tokens of
pure patches (DINOv3's foreground notebook; for a handful of images, fitted in seconds). Masks are
palette or grey PNGs, one class index per pixel (255 = ignore), named after their images
(photo.jpg <-> photo.png); builtin:shapes brings its own (0 background, 1.. the shape classes).
HEAD is a run folder: config.yaml, metrics.jsonl, checkpoint.pt (--resume continues; SIGTERM / Ctrl-C
save and stop), then segmenter.json, head.safetensors and a copy of the backbone.
segment predict: writes <stem>.png (palette mask) and <stem>_overlay.png per image; images larger
than the training crop are segmented in sliding windows.
segment eval: mIoU (intersections and unions summed over all images) and IoU per class.
The default --image-size (shorter side, and the training crop) is twice the backbone's recorded size;
predict and eval use the head's unless given.
Examples:
  dinolab segment fit backbone.safetensors --images photos/ --masks masks/ --out head/ --steps 2000
  dinolab segment fit backbone.safetensors --images "builtin:shapes?n=10" --head logreg --out head/
  dinolab segment predict head/ new_photos/ --out predicted/
  dinolab segment eval head/ --images val/ --masks val_masks/ --json miou.json
"""

from __future__ import annotations

import argparse

_SHARED = ("image_size", "mean", "std", "device", "precision", "batch_size", "progress")


def _shared(parser: argparse.ArgumentParser, suppress: bool) -> None:
    from ..eval.options import add_inference_arguments
    from ._visual import DENSE_SIZE_HELP

    group = add_inference_arguments(parser, only=_SHARED, title="running the backbone")
    for action in group._group_actions:
        if action.dest == "image_size":
            action.help = DENSE_SIZE_HELP if suppress else "shorter side fed to the backbone (default: the head's)"
        if suppress:  # fit: a flag not given leaves config.yaml's value on --resume
            action.default = argparse.SUPPRESS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runtime.config_loader import add_flags
    from ..segment.config import SegmentConfig

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="fit a head on images and masks", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("weights", nargs="?", metavar="WEIGHTS", help="backbone weights (kept frozen)")
    fit.add_argument("--out", required=True, metavar="HEAD", help="run folder of the head")
    add_flags(fit, SegmentConfig, skip=("weights", *_SHARED))
    _shared(fit, suppress=True)
    group = fit.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="replace an earlier run in HEAD")
    group.add_argument("--resume", action="store_true", help="continue the run in HEAD from its checkpoint")

    pred = sub.add_parser("predict", help="write predicted masks and overlays", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    pred.add_argument("head", metavar="HEAD", help="a folder written by `dinolab segment fit`")
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or builtin:NAME[?n=N]")
    pred.add_argument("--out", required=True, metavar="DIR", help="output folder")
    pred.add_argument("--force", action="store_true", help="overwrite existing output files")
    ev = sub.add_parser("eval", help="mIoU of a head on images with masks", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("head", metavar="HEAD", help="a folder written by `dinolab segment fit`")
    ev.add_argument("--images", required=True, metavar="DIR", help="folder of images, or builtin:shapes[?n=N]")
    ev.add_argument("--masks", metavar="DIR", help="folder of masks named after the images")
    ev.add_argument("--json", metavar="FILE", help="also write the scores (and the confusion matrix) as JSON")
    for p in (pred, ev):
        p.add_argument("--weights", metavar="W", help="backbone file to use instead of HEAD's copy (same fingerprint)")
        _shared(p, suppress=False)


def run(args: argparse.Namespace) -> int:
    return {"fit": _fit, "predict": _predict, "eval": _eval}[args.action](args)


def _fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..runtime.config_loader import check_fields, flag_values
    from ..segment import fit
    from ..segment.config import CONFIG_NAME, SEGMENT_SCHEMA, SegmentConfig

    saved = Path(args.out) / CONFIG_NAME
    cfg = SEGMENT_SCHEMA.load(saved if args.resume and saved.is_file() else None, [])
    given = {k: v for k, v in flag_values(args, SegmentConfig).items() if k != "weights" or v is not None}
    SEGMENT_SCHEMA.merge(cfg, given, where=" (command line)")  # WEIGHTS left out on --resume keeps config.yaml's
    check_fields(cfg)
    if cfg.weights is None or cfg.images is None:
        raise ConfigError("dinolab segment fit needs WEIGHTS and --images (with --masks for a folder)")
    seg = fit(cfg.weights, out=args.out, config=cfg, force=args.force, resume=args.resume)
    if seg.stopped_by:
        import signal

        print(f"stopped by {seg.stopped_by}; continue with: dinolab segment fit --resume --out {args.out}")
        return 128 + int(getattr(signal, seg.stopped_by))
    last = seg.history[-1] if seg.history else {}
    what = (f"{last.get('patches')} patches, train accuracy {last.get('train_accuracy', float('nan')):.3f}"
            if cfg.head == "logreg" else f"{last.get('step')} steps, final loss {last.get('loss', float('nan')):.4f}")
    print(f"fitted a {cfg.head} head ({len(seg.classes)} classes: {', '.join(seg.classes)}; {cfg.layers} layer(s), "
          f"{seg.image_size} px) on {cfg.images}: {what} -> {args.out}")
    _report_skipped(seg.skipped, f"{args.out}/skipped.log")
    return 0


def _report_skipped(skipped: list[tuple[str, str]], where: str | None = None) -> None:
    import sys

    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s) or mask(s)" + (f"; listed in {where}" if where else ""))


def _load(args: argparse.Namespace):
    from ..device import resolve_device, resolve_precision
    from ..eval.options import InferenceOptions
    from ..segment import load_segmenter

    options = InferenceOptions.from_args(args)
    device = resolve_device(options.device)
    seg = load_segmenter(args.head, weights=args.weights, device=device)
    seg.image_size = options.image_size or seg.image_size
    seg.preprocess = seg.preprocess.replace(image_size=seg.image_size, mean=options.mean, std=options.std)
    print(f"segment {args.action}: {seg.head.kind} head, {len(seg.classes)} classes, shorter side "
          f"{seg.image_size} px, windows of {seg.image_size} px", flush=True)
    return seg, device, resolve_precision(options.precision, device), options


def _predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.decode import UnreadableImage
    from ..eval.viz import save_png, to_hwc, unique_stems
    from ..runtime.messages import progress
    from ..segment import predict_mask, write_mask
    from ..segment.masks import mask_overlay
    from ._visual import _load_input, check_outputs, image_inputs, report_unreadable

    paths = image_inputs(args.images)
    stems, out = unique_stems(paths), Path(args.out)
    check_outputs([out / f"{s}{n}.png" for s in stems for n in ("", "_overlay")], args.force)
    seg, device, precision, options = _load(args)
    bad: list[tuple[str, str]] = []
    for path, stem in progress(list(zip(paths, stems)), enabled=options.progress, desc="segment", unit="image"):
        try:
            image = _load_input(path, None)  # full size: masks match the image
        except UnreadableImage as e:
            bad.append((e.path, e.reason))
            continue
        mask = predict_mask(seg, image, batch_size=options.batch_size, device=device, precision=precision)
        write_mask(out / f"{stem}.png", mask)
        save_png(out / f"{stem}_overlay.png", mask_overlay(to_hwc(image), mask))
    report_unreadable(bad, len(paths))
    print(f"wrote masks of {len(paths)} image(s) to {out} (palette PNGs: pixel value = class index; classes "
          f"{', '.join(f'{i} {c}' for i, c in enumerate(seg.classes))})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    from ..errors import DataError
    from ..io import atomic_save_text, check_writable
    from ..segment import evaluate, load_segmentation_data
    from ._visual import report_unreadable

    if args.json:
        check_writable(args.json, force=True)
    data = load_segmentation_data(args.images, args.masks)
    seg, device, precision, options = _load(args)
    r = evaluate(seg, data, batch_size=options.batch_size, device=device, precision=precision,
                 progress=options.progress)
    if r["images"] == 0:
        raise DataError(f"none of the {len(data)} image/mask pairs of {args.images} could be read (e.g. "
                        f"{r['skipped'][0][0]}: {r['skipped'][0][1]})")
    print(f"mIoU {100 * r['miou']:.1f}  pixel accuracy {100 * r['pixel_accuracy']:.1f}  ({r['images']} images, "
          f"{r['pixels']} labelled pixels; intersections and unions summed over the set)")
    for name, c in r["per_class"].items():
        print(f"  {name:<20} IoU {100 * c['iou']:5.1f}  pixels {c['pixels']}")
    if args.json:
        atomic_save_text(args.json, json.dumps({**r, "head": str(args.head), "images_source": str(args.images)},
                                               indent=2, default=str) + "\n")
    report_unreadable(r["skipped"], len(data), what="image/mask pairs")
    return 0
