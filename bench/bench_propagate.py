"""Video object segmentation on builtin:moving_shapes through ``dinolab propagate`` (issue 19).

Writes the generated videos to disk in the DAVIS layout (JPEG frames, palette masks), then runs
``dinolab propagate FRAMES --mask <first mask> --ground-truth <masks>`` on every video with the given
backbone and with a random-init backbone of the same architecture, and reports J, F and J&F (DAVIS:
means over frames 1..T-2 per object, then over all objects of all videos) next to the baseline of
copying the first mask to every frame. Also writes a picture of the first video (ground truth and
both backbones' masks on a few frames).

Example (the backbone of ``dinolab train dinov2_shapes --out v2``):
  python bench/bench_propagate.py --backbone v2/teacher_backbone.safetensors --out prop_bench/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

import numpy as np  # noqa: E402

import dinolab  # noqa: E402
from dinolab.cli import main as dinolab_main  # noqa: E402
from dinolab.data.builtin import load_builtin  # noqa: E402
from dinolab.data.video import read_mask, write_video_set  # noqa: E402


def _random_like(weights: str, out: Path) -> str:
    import torch

    trained = dinolab.load_model(weights)
    torch.manual_seed(0)
    model = type(trained)(**trained.config)
    return str(dinolab.save_model(model, out / "random_init", preprocess=trained.preprocess, overwrite=True))


def _run(weights: str, root: Path, video: str, out: Path, extra: list[str]) -> dict:
    frames, gt = root / "JPEGImages" / video, root / "Annotations" / video
    code = dinolab_main(["propagate", weights, str(frames), "--mask", str(gt / "00000.png"), "--ground-truth", str(gt),
                         "--out", str(out), "--force", "--no-progress", *extra])
    if code != 0:
        raise SystemExit(f"dinolab propagate failed on {video} (exit {code})")
    return json.loads((out / "propagate_scores.json").read_text())


def _pool(records: list[dict], key: str) -> dict:
    """DAVIS over a data set: every object of every video counts once."""
    objects = [o for r in records for o in r[key]["objects"].values()]
    j, f = float(np.mean([o["J"] for o in objects])), float(np.mean([o["F"] for o in objects]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "objects": len(objects)}


def _picture(root: Path, outs: dict[str, Path], path: Path, video: str, n: int = 6) -> None:
    from dinolab.commands._propagate_io import _overlay
    from dinolab.data.decode import decode_image
    from dinolab.eval.viz import contact_sheet, save_png

    names = sorted(p.stem for p in (root / "JPEGImages" / video).glob("*.jpg"))
    picks = [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]
    tiles, labels = [], []
    for row, folder in [("truth", root / "Annotations" / video)] + [(k.split()[0], v / video) for k, v in outs.items()]:
        for name in picks:
            frame = decode_image(root / "JPEGImages" / video / f"{name}.jpg")
            tiles.append(_overlay(frame, read_mask(folder / f"{name}.png")))
            labels.append(f"{row} {name}")
    save_png(path, contact_sheet(tiles, labels, columns=n, min_side=96))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", required=True, help="trained weights (e.g. RUN/teacher_backbone.safetensors)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", default="builtin:moving_shapes?videos=8&frames=24&size=96&objects=2")
    p.add_argument("--image-sizes", type=int, nargs="+", default=[0],
                   help="--image-size values passed to dinolab propagate (0: its default)")
    p.add_argument("--picture", type=Path, default=None, help="where to write the picture (default OUT/...png)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    videos = load_builtin(args.data)
    root = args.out / "davis"
    write_video_set(videos, root)
    backbones = {"trained": args.backbone, "random init": _random_like(args.backbone, args.out)}
    tables = {}
    for size in args.image_sizes:
        extra = ["--device", "cpu"] + (["--image-size", str(size)] if size else [])
        results, outs = {}, {}
        for label, weights in backbones.items():
            outs[label] = args.out / f"{label.split()[0]}_{size or 'default'}"
            records = [_run(weights, root, v, outs[label] / v, extra) for v in videos.videos]
            results[label] = _pool(records, "propagation")
            results["copy first mask"] = _pool(records, "copy_first_mask")
        tables[size or "default"] = results
        _picture(root, outs, (args.picture or args.out / "propagate_moving_shapes.png").with_suffix(f".{size or 'default'}.png"),
                 videos.videos[0])
    print(f"\n{args.data}: {len(videos.videos)} videos; J / F / J&F over {results['trained']['objects']} objects")
    print("| --image-size | method | J | F | J&F |\n|---|---|---|---|---|")
    for size, results in tables.items():
        for label, r in results.items():
            print(f"| {size} | {label} | {r['J']:.3f} | {r['F']:.3f} | {r['J&F']:.3f} |")
    (args.out / "bench_propagate.json").write_text(json.dumps({"data": args.data, "results": tables}, indent=2))


if __name__ == "__main__":
    main()
