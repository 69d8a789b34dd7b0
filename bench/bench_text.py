"""Text alignment on builtin:shapes: zero-shot accuracy vs chance, with the backbone provably unchanged.

Aligns a text encoder to a frozen backbone on ``builtin:shapes`` captions (seed 0), then, on a
held-out set drawn with another seed (never seen in alignment), reports:

- zero-shot accuracy by **shape name** (5 classes, the data set's labels) with the default
  prompt templates, and by colour (7) and background (4) words read from the held-out captions;
- text search: mean precision@10 of the 35 queries "a <colour> <shape>" (a hit must match both);
- the backbone's k-NN top-1 on the shape labels (k=20, CLS), before and after alignment; the
  backbone's state-dict fingerprint is checked to be bit-identical.

With no --weights a random-init ViT-Tiny is used: its features are weak (a supervised linear
probe on them gets ~40% on shapes), which bounds what any alignment can reach. Pass the teacher
of a `dinolab train` run on shapes to see a trained backbone.

Examples:
  python bench/bench_text.py
  python bench/bench_text.py --weights runs/shapes/teacher_backbone.safetensors --epochs 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import dinolab
from dinolab.data import ImageDataset
from dinolab.eval.features import embed
from dinolab.eval.knn import knn_classify
from dinolab.text import align, embed_images, text_search, zeroshot_classify
from dinolab.text.aligned import state_fingerprint
from dinolab.text.tokenizer import words

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan", "orange"]
BACKGROUNDS = ["striped", "checkered", "noisy", "gradient"]


def knn_top1(backbone, train: str, test: str, image_size: int) -> float:
    a = embed(backbone, train, image_size=image_size, device="cpu", progress=False)
    b = embed(backbone, test, image_size=image_size, device="cpu", progress=False)
    return float(knn_classify(a.cls, a.labels, b.cls, b.labels, k=20)[20]["top1"])


def attribute_labels(captions: list[str], names: list[str]) -> np.ndarray:
    return np.array([next(names.index(w) for w in words(c) if w in names) for c in captions])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="backbone weights (default: random-init vit_tiny, patch 8, depth 6)")
    p.add_argument("--train-n", type=int, default=1000)
    p.add_argument("--test-n", type=int, default=500)
    p.add_argument("--size", type=int, default=32, help="side of the generated shapes images")
    p.add_argument("--image-size", type=int, default=32, help="side fed to the backbone")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--head-blocks", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train = f"builtin:shapes?n={args.train_n}&size={args.size}&seed=0"
    test = f"builtin:shapes?n={args.test_n}&size={args.size}&seed=1"
    if args.weights:
        backbone, name = dinolab.load_model(args.weights), args.weights
    else:
        torch.manual_seed(args.seed)
        backbone = dinolab.create_model("vit_tiny", img_size=args.image_size, patch_size=8, depth=6)
        name = "random-init vit_tiny/8 depth 6"
    fingerprint = state_fingerprint(backbone)
    knn_before = knn_top1(backbone, train, test, args.image_size)

    t0 = time.perf_counter()
    model = align(backbone, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  head_blocks=args.head_blocks, image_size=args.image_size, device="cpu", precision="fp32",
                  progress=False, seed=args.seed)
    seconds = time.perf_counter() - t0
    assert state_fingerprint(backbone) == fingerprint, "the frozen backbone changed"
    knn_after = knn_top1(backbone, train, test, args.image_size)

    held_out = ImageDataset(test)
    emb = embed_images(model, held_out, device="cpu", precision="fp32", progress=False)
    shape = zeroshot_classify(model, emb, list(held_out.classes))
    rows = [("shape name", shape.accuracy, shape.chance)]
    for title, names, suffix in (("colour", COLOURS, ""), ("background", BACKGROUNDS, " background")):
        res = zeroshot_classify(model, emb, [n + suffix for n in names])
        truth = attribute_labels(held_out.captions, names)
        rows.append((title, float((res.predictions == truth).mean()), 1 / len(names)))
    colour_of = attribute_labels(held_out.captions, COLOURS)
    precisions = []
    for ci, colour in enumerate(COLOURS):
        for si, shape_name in enumerate(held_out.classes):
            hits = text_search(model, f"a {colour} {shape_name}", emb, top_k=10)
            precisions.append(np.mean([colour_of[h.index] == ci and held_out.labels[h.index] == si for h in hits]))

    print(f"backbone: {name}; align on {train} ({args.epochs} epochs, batch {args.batch_size}, lr {args.lr}, "
          f"head blocks {args.head_blocks}, {args.threads} thread(s)): {seconds:.0f} s; held out: {test}")
    print(f"final train loss {model.history[-1]['loss']:.3f}, logit scale {model.scale:.1f}, "
          f"zero-shot shape accuracy on the training images {model.history[-1]['zeroshot_acc']:.3f}")
    print("| zero-shot on held-out shapes | accuracy | chance |")
    print("|---|---|---|")
    for title, acc, chance in rows:
        print(f"| {title} | {acc:.3f} | {chance:.3f} |")
    print(f"text search 'a <colour> <shape>' (35 queries): mean precision@10 {np.mean(precisions):.3f} "
          f"(chance {1 / 35:.3f})")
    print(f"backbone k-NN top-1 (k=20, shape labels): before {knn_before:.4f}, after {knn_after:.4f}; "
          f"state dict bit-identical: yes")


if __name__ == "__main__":
    main()
