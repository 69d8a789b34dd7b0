"""Weighted k-NN classification of frozen features (DINO protocol: cosine, T = 0.07, k = 10/20/100/200).

Each validation image is classified by the votes exp(cos/T) of its k most similar training
images. Reports top-1 and top-5 accuracy (top-5 only with 5 or more classes), balanced accuracy
and macro-F1 for every k, and the per-class recall for the best k. Splits are class-per-subfolder
folders embedded with WEIGHTS (final-norm CLS token), or .npz files from `dinolab embed`. With
--patch-mean the feature is the CLS and the mean patch token, each L2-normalised, side by side (on small
images the patch tokens hold detail the CLS misses: BENCHMARKS.md, issue 17).
Examples:
  dinolab knn dinov2_vits14.pth --train data/train --val data/val
  dinolab knn --train-embeddings train.npz --val-embeddings val.npz --k 20 --out knn.json
  dinolab knn RUN/teacher_backbone.safetensors --train data/train --val data/val --patch-mean
"""

from __future__ import annotations

import argparse

from ._evalio import add_embed_arguments, add_output_arguments, add_save_argument, add_split_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser, [("train", "labelled training set"), ("val", "labelled validation set")])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], metavar="K",
                        help="neighbourhood sizes (default 10 20 100 200)")
    parser.add_argument("--temperature", type=float, default=0.07, metavar="T", help="vote temperature (default 0.07)")
    parser.add_argument("--patch-mean", action="store_true",
                        help="classify on the L2-normalised CLS and mean patch token side by side (equal weight); "
                             ".npz inputs need `dinolab embed --patch-mean`")
    parser.add_argument("--faiss", choices=["auto", "yes", "no"], default="auto",
                        help="neighbour search with faiss (auto: when installed)")
    add_save_argument(parser, "the k-NN classifier at the best k (the training features and labels)")
    add_embed_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..eval.knn import knn_classify
    from ..eval.metrics import classification_report
    from ._evalio import SplitLoader, align_labels, check_out, check_save, pct, per_class_table, table, write_json

    check_out(args)
    check_save(args)
    splits = SplitLoader(args, "knn")
    train, val = (splits.load(name, patch_mean=args.patch_mean) for name in ("train", "val"))
    xtr, xva = (e.cls_with_patch_mean() if args.patch_mean else e.cls for e in (train, val))
    val_labels = align_labels(train, val, "--val")
    n_cls = len(train.classes) if train.classes else int(max(train.labels.max(), val_labels.max())) + 1
    res = knn_classify(xtr, train.labels, xva, val_labels, k=args.k, temperature=args.temperature,
                       classes=train.classes, num_classes=n_cls,
                       use_faiss={"auto": "auto", "yes": True, "no": False}[args.faiss])
    what = "CLS + mean patch token" if args.patch_mean else "CLS"
    print(f"k-NN on {len(train)} training and {len(val)} validation images, {xtr.shape[1]}-d features ({what}), "
          f"T = {args.temperature}")
    rows = [(k, r["k_used"], pct(r["top1"]), pct(r["top5"]), pct(r["balanced_accuracy"]), pct(r["macro_f1"]))
            for k, r in res.items()]
    print(table(["k", "used", "top-1 %", "top-5 %", "balanced %", "macro-F1 %"], rows))
    for note in dict.fromkeys(n for r in res.values() for n in r["notes"]):
        print(f"note: {note}")
    best = max(res, key=lambda k: res[k]["top1"])
    report = classification_report(val_labels, res[best]["predictions"], train.classes or n_cls)
    print(per_class_table(report["per_class"], f"per class (k = {best})"))
    _save(args, splits, train, xtr, res[best]["k_used"], n_cls)
    write_json(args, {"command": "knn", "temperature": args.temperature, "patch_mean": args.patch_mean,
                      "n_train": len(train), "n_val": len(val), "best_k": best, "per_class": report["per_class"],
                      "results": {k: {key: v for key, v in r.items() if key != "predictions"} for k, r in res.items()}})
    return 0


def _save(args: argparse.Namespace, splits, train, xtr, k: int, n_cls: int) -> None:
    import torch
    import torch.nn.functional as F

    from ._evalio import save_classifier_from

    feats = F.normalize(torch.from_numpy(xtr).float(), dim=1)
    save_classifier_from(args, splits, train, "knn", {"features": feats, "labels": torch.from_numpy(train.labels)},
                         {"k": int(k), "temperature": args.temperature}, n_cls, patch_mean=args.patch_mean,
                         unit_parts=args.patch_mean)
