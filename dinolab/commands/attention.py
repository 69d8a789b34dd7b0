"""Last-block [CLS] attention of each head as PNG overlays, with masks keeping 60 percent of the attention mass.

For every IMAGE (files, or folders searched recursively) writes into DIR:
  <stem>_attn_head<k>.png  heat map of head k over the image
  <stem>_attn_mean.png     the mean over heads
  <stem>_mask.png          the mean map's --keep mask (white = kept patches)
  <stem>_sheet.png         contact sheet: image, mean, mask, each head and each head's mask
Registers are excluded. Example:
  dinolab attention run/model.safetensors photos/ --out attn/
"""

from __future__ import annotations

import argparse

from ._visual import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="any weights file or folder dinolab.load_model reads")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders of images or builtin:NAME[?n=N]")
    add_model_arguments(parser)
    parser.add_argument("--keep", type=float, default=0.6,
                        help="share of each map's attention mass the mask keeps (default 0.6, as DINO)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..device import autocast
    from ..errors import ConfigError
    from ..eval.attention import attention_maps, render_attention
    from ..eval.viz import save_png, unique_stems
    from ._visual import check_outputs, image_inputs, load_for_inference, prepared_images, report_unreadable

    if not 0.0 < args.keep <= 1.0:
        raise ConfigError(f"--keep must be in (0, 1], got {args.keep}")
    paths = image_inputs(args.images)
    out = Path(args.out)
    stems = unique_stems(paths)
    check_outputs((out / f"{s}{n}.png" for s in stems for n in ("_attn_mean", "_mask", "_sheet")), args.force)
    model, device, precision, preprocess = load_for_inference(args, "attention")
    check_outputs((out / f"{s}_attn_head{k}.png" for s in stems for k in range(model.num_heads)), args.force)

    bad: list[tuple[str, str]] = []
    for stem, resized, x in prepared_images(paths, stems, model.patch_size, preprocess, bad, "attention",
                                               args.progress):
        with torch.no_grad(), autocast(device, precision):
            attn = attention_maps(model, x)
        pics = render_attention(resized, attn, keep=args.keep)
        for k, pic in enumerate(pics.heads):
            save_png(out / f"{stem}_attn_head{k}.png", pic)
        save_png(out / f"{stem}_attn_mean.png", pics.mean)
        save_png(out / f"{stem}_mask.png", pics.mask)
        save_png(out / f"{stem}_sheet.png", pics.sheet)
    report_unreadable(bad, len(paths))
    print(f"wrote attention maps of {len(paths)} image(s) to {out}")
    return 0
