"""Linear probe on frozen features: a learning-rate grid of linear classifiers (DINOv2 protocol), or --logreg.

Features are the final-norm CLS tokens of the last --n-last-blocks blocks, with --avgpool the
mean patch token of the last block appended (DINOv2's layout). The probe trains one nn.Linear per
learning rate on the same batches (SGD momentum 0.9, cosine schedule, weights N(0, 0.01)) and keeps
the best: chosen on the validation set by default, as the official protocol (optimistic; use
--selection holdout for an unbiased figure). --logreg fits scikit-learn's logistic regression with
C swept on a held-out 10% of the training set, then refitted on all of it.
Examples:
  dinolab linear dinov2_vits14.pth --train data/train --val data/val --n-last-blocks 4 --avgpool
  dinolab linear --train-embeddings train.npz --val-embeddings val.npz --logreg --out probe.json
"""

from __future__ import annotations

import argparse

from ._evalio import add_embed_arguments, add_output_arguments, add_save_argument, add_split_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser, [("train", "labelled training set"), ("val", "labelled validation set")])
    g = parser.add_argument_group("features")
    g.add_argument("--n-last-blocks", type=int, default=1, metavar="N",
                   help="concatenate the CLS tokens of the last N blocks (default 1; DINO used 4 for ViT-S)")
    g.add_argument("--avgpool", action="store_true", help="append the mean patch token of the last block")
    p = parser.add_argument_group("probe")
    p.add_argument("--logreg", action="store_true", help="scikit-learn logistic regression instead of the SGD grid")
    p.add_argument("--lrs", type=float, nargs="+", default=None, metavar="LR",
                   help="base learning rates, scaled by probe batch / 256 (default DINOv2's 1e-5 ... 0.1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 10, more on small sets: >= 1000 steps)")
    p.add_argument("--probe-batch-size", type=int, default=256, metavar="B", help="SGD batch size (default 256)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="SGD weight decay (default 0)")
    p.add_argument("--standardize", action="store_true",
                   help="scale features to zero mean and unit variance on the training set (always on for --logreg)")
    p.add_argument("--selection", choices=["val", "holdout", "cv"], default=None,
                   help="choose the learning rate / C on val (official; default for the grid), on a held-out 10%% "
                        "of train (default for --logreg) or by 5-fold cross-validation (--logreg only)")
    p.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit for --logreg (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    add_save_argument(parser, "the chosen classifier (weights on the raw features, any standardisation folded in)")
    add_embed_arguments(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..eval.linear import linear_probe, logistic_regression_probe
    from ._evalio import SplitLoader, align_labels, check_out, check_save, features, pct, per_class_table, table, write_json

    if args.selection == "cv" and not args.logreg:
        raise ConfigError("--selection cv is available with --logreg only; use val or holdout for the SGD grid")
    if args.n_last_blocks < 1:
        raise ConfigError(f"--n-last-blocks must be at least 1, got {args.n_last_blocks}")
    check_out(args)
    check_save(args)
    splits = SplitLoader(args, "linear")
    opts = dict(n_last_blocks=args.n_last_blocks, patch_mean=args.avgpool)
    train, val = splits.load("train", **opts), splits.load("val", **opts)
    val_labels = align_labels(train, val, "--val")
    xtr, xva = features(train, args.avgpool), features(val, args.avgpool)
    n_cls = len(train.classes) if train.classes else None
    if args.logreg:
        res = logistic_regression_probe(xtr, train.labels, xva, val_labels, selection=args.selection or "holdout",
                                        max_iter=args.max_iter, num_classes=n_cls, classes=train.classes,
                                        seed=args.seed)
        grid_name = "C"
    else:
        res = linear_probe(xtr, train.labels, xva, val_labels, lrs=args.lrs, epochs=args.epochs,
                           batch_size=args.probe_batch_size, weight_decay=args.weight_decay,
                           standardize=args.standardize, selection=args.selection or "val", num_classes=n_cls,
                           classes=train.classes, device=args.device, seed=args.seed)
        grid_name = "lr"
    kind = "logistic regression" if args.logreg else f"linear probe ({res.epochs} epochs)"
    print(f"{kind} on {len(train)} training and {len(val)} validation images, {xtr.shape[1]}-d features")
    score = "val top-1 %" if res.selection == "val" else f"{res.selection} top-1 %"
    marked = [(f"{v:g}" + (" *" if v == res.best else ""), pct(a)) for v, a in res.grid.items()]
    print(table([grid_name, score], marked))
    print(table(["best " + grid_name, "top-1 %", "top-5 %", "balanced %", "macro-F1 %"],
                [(f"{res.best:g}", pct(res.top1), pct(res.top5), pct(res.report["balanced_accuracy"]),
                  pct(res.report["macro_f1"]))]))
    print(f"note: {res.selection_note}")
    for note in res.notes:
        print(f"note: {note}")
    print(per_class_table(res.report["per_class"]))
    _save(args, splits, train, res)
    write_json(args, {"command": "linear", "n_train": len(train), "n_val": len(val), "dim": int(xtr.shape[1]),
                      "n_last_blocks": args.n_last_blocks, "avgpool": args.avgpool, "result": res.to_dict()})
    return 0


def _save(args: argparse.Namespace, splits, train, res) -> None:
    from ._evalio import save_classifier_from

    layer = res.classifier
    save_classifier_from(args, splits, train, "linear", {"weight": layer.weight.detach().float(),
                                                         "bias": layer.bias.detach().float()},
                         {"method": res.method, "best": res.best}, int(layer.weight.shape[0]),
                         n_last_blocks=args.n_last_blocks, patch_mean=args.avgpool)
