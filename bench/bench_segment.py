"""Segmentation from 10 labelled builtin:shapes images, scored on 200 others (issue 19 item 5).

Through the public commands (``dinolab segment fit`` / ``eval``, in-process): the logreg head and the
linear head on a shapes-trained backbone (BACKBONE, e.g. the teacher of ``dinolab train dinov2_shapes``)
and on a random-init backbone of the same architecture; baselines: every pixel background (the
majority class), and logistic regression on each patch's mean colour (raw pixels through the same
pipeline: the same patches, purity rule and solver). Prints one markdown table.

Example:
  python bench/bench_segment.py RUN/teacher_backbone.safetensors --out /tmp/segbench --steps 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TRAIN, VAL = "builtin:shapes?n=10&seed=1", "builtin:shapes?n=200&seed=2"
RUN = ["--device", "cpu", "--no-progress"]


class PatchColour(torch.nn.Module):
    """A stand-in backbone whose 'patch tokens' are each patch's mean normalised RGB (3 channels)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size, self.embed_dim, self.depth = patch_size, 3, 1
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # patch_tokens reads the device from a parameter

    def forward_features(self, x):
        return {"patches": F.avg_pool2d(x, self.patch_size).flatten(2).transpose(1, 2)}


def fg_iou(confusion) -> float:
    """IoU of 'any shape' against background: the shape classes merged (what the features must at least tell)."""
    cm = np.asarray(confusion)
    inter, pred_fg, true_fg = cm[1:, 1:].sum(), cm[:, 1:].sum(), cm[1:, :].sum()
    return float(inter / (pred_fg + true_fg - inter))


def _cli(args: list[str]) -> float:
    from dinolab.cli import main

    start = time.perf_counter()
    code = main(args)
    if code != 0:
        raise SystemExit(f"{' '.join(args)} exited {code}")
    return time.perf_counter() - start


def _score(head: Path, out: Path, size: int) -> dict:
    _cli(["segment", "eval", str(head), "--images", VAL, "--json", str(out / f"{head.name}.json"), *RUN])
    return json.loads((out / f"{head.name}.json").read_text())


def _baselines(size: int) -> dict[str, dict]:
    from dinolab.models.preprocess import Preprocess
    from dinolab.segment import confusion_matrix, evaluate, fit, iou_report, load_segmentation_data

    val = load_segmentation_data(VAL)
    k = len(val.classes)
    cm = sum(confusion_matrix(m, np.zeros_like(m), k) for _, _, m in val.readable())
    colour = PatchColour(8)
    colour.preprocess = Preprocess(image_size=size // 2)
    seg = fit(colour, TRAIN, head="logreg", image_size=size, device="cpu", progress=False)
    return {"all background (majority class)": {**iou_report(cm), "confusion": cm},
            "patch mean colour, logreg": evaluate(seg, val, device="cpu", progress=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", help="shapes-trained backbone weights")
    parser.add_argument("--out", required=True, help="scratch folder (heads, scores)")
    parser.add_argument("--steps", type=int, default=300, help="linear head steps")
    parser.add_argument("--image-size", type=int, default=64, help="shorter side (default 64: 2x the 32 px crops)")
    args = parser.parse_args()
    import dinolab

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = dinolab.load_model(args.backbone)
    torch.manual_seed(0)
    random = dinolab.create_model("vit_tiny", patch_size=trained.patch_size, depth=trained.depth,
                                  embed_dim=trained.embed_dim, num_heads=trained.num_heads)
    dinolab.save_model(random, out / "random_init.safetensors", overwrite=True, preprocess=trained.preprocess)
    size = ["--image-size", str(args.image_size)]
    rows = []
    for name, weights in (("shapes-trained", args.backbone), ("random init", str(out / "random_init.safetensors"))):
        for head, extra in (("logreg", ["--head", "logreg"]), ("linear", ["--steps", str(args.steps)])):
            folder = out / f"{name.replace(' ', '_')}_{head}"
            seconds = _cli(["segment", "fit", weights, "--images", TRAIN, "--out", str(folder), "--force", *extra,
                            *size, *RUN])
            r = _score(folder, out, args.image_size)
            rows.append((f"{name} backbone, {head} head", r, f"{seconds:.0f}"))
    rows = [(name, r, "") for name, r in _baselines(args.image_size).items()] + rows
    print("| method | mIoU (6 classes) | shape-vs-background IoU | pixel acc. | fit s |\n|---|---|---|---|---|")
    for name, r, seconds in rows:
        print(f"| {name} | {100 * r['miou']:.1f} | {100 * fg_iou(r['confusion']):.1f} | "
              f"{100 * r['pixel_accuracy']:.1f} | {seconds} |")


if __name__ == "__main__":
    main()
