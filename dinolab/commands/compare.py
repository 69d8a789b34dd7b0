"""Compare zero-shot, k-NN, few-shot and linear classifiers on one labelled set, with and without imbalance handling.

DATA (class-per-subfolder folder or builtin:NAME) is split once into train / test, stratified
with a fixed --seed (--test-fraction of each class), or the labelled --test set is used. The
frozen features of WEIGHTS are embedded once and shared. Methods: zero-shot by class names (with
--aligned; --classes are the prompt names of DATA's classes, in order), weighted k-NN, prototype
few-shot at k = 1, 5, 10 (--episodes per k), logistic regression, the SGD linear probe, and
`dinolab finetune` on the training split in modes head, last:2 and lora ("finetune full" only when
named in --methods; settings with --finetune KEY=VALUE ..., e.g. epochs=10 flip=false); each also
with imbalance handling where it applies (+balanced: class-frequency-normalised k-NN votes or
class-balanced loss weights; +logit-adj: post-hoc logit adjustment, logits - log prior, or for
fine-tuning the same adjustment inside the loss). For each:
accuracy, balanced accuracy, macro-F1, worst-class recall and expected calibration error with 95%
bootstrap intervals over the test set, and the wall time. Writes DIR/results.json and
DIR/compare.html (table, per-class recall bars, confusion matrices).
Examples:
  dinolab compare run/export/teacher.safetensors "builtin:digits?imbalance=50&split=all" --out cmp
  dinolab compare dinov2_vits14.pth data/labelled --test data/test --out cmp
  dinolab compare W builtin:shapes --aligned aligned/ --out cmp --methods zeroshot knn logreg
  dinolab compare W photos/ --out cmp --methods knn logreg "finetune last:2" --finetune epochs=15 flip=false
"""

from __future__ import annotations

import argparse

from ..eval.options import add_inference_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="backbone weights (any format dinolab.load_model reads)")
    parser.add_argument("data", metavar="DATA", help="labelled images: class-per-subfolder folder or builtin:NAME")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for results.json and compare.html")
    parser.add_argument("--test", default=None, metavar="DATA", help="labelled test set (default: split DATA)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                        help="share of each class held out for testing when there is no --test (default 0.2)")
    parser.add_argument("--aligned", default=None, metavar="A", help="aligned model folder, for zero-shot")
    parser.add_argument("--classes", default=None, metavar="NAMES",
                        help="zero-shot prompt names of DATA's classes, comma-separated, in class-folder order")
    parser.add_argument("--methods", nargs="+", default=None, metavar="M",
                        help="methods to run (default all; see the list in the description)")
    parser.add_argument("--finetune", nargs="+", default=[], metavar="KEY=VALUE",
                        help="settings of the fine-tuning rows (keys of `dinolab finetune --print-config`)")
    parser.add_argument("--episodes", type=int, default=20, help="few-shot episodes per k (default 20)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    add_inference_arguments(parser, extra=("runtime",))
    parser.add_argument("--max-bad-fraction", type=float, default=0.1, metavar="F",
                        help="stop if more than this share of the files cannot be read (default 0.1)")
    parser.add_argument("--force", action="store_true", help="overwrite results.json / compare.html in DIR")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..compare import compare
    from ..compare.report import headers, table_rows, write_outputs
    from ..eval.options import InferenceOptions
    from ..io import check_writable, json_value
    from ._evalio import bad_files_report, table

    options = InferenceOptions.from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from ..errors import DinolabError

        raise DinolabError(f"--out {out} is a file; give a folder for results.json and compare.html")
    for name in ("results.json", "compare.html"):
        check_writable(out / name, force=args.force)
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    result = compare(args.weights, args.data, test=args.test, aligned=args.aligned, classes=classes,
                     methods=args.methods, test_fraction=args.test_fraction, seed=args.seed, episodes=args.episodes,
                     n_resamples=args.resamples, options=options, max_bad_fraction=args.max_bad_fraction,
                     finetune=_finetune_settings(args.finetune))
    d = json_value(result.to_dict())
    if d["bad"]:
        print(bad_files_report(args.data, [tuple(b) for b in d["bad"]]))
    print(table(headers(), table_rows(d), f"{d['n_train']} training and {d['n_test']} test images, "
                                          f"{len(d['classes'])} classes; value [95% bootstrap interval], percent"))
    print("images per class (train/test): " + ", ".join(f"{c} {a}/{b}" for c, a, b in
                                                         zip(d["classes"], d["train_counts"], d["test_counts"])))
    print(f"embedding: {d['embed_s']:.1f} s, shared by the feature methods")
    written = write_outputs(result, out)
    print(f"results written to {written[0]} and {written[1]}")
    return 0


def _finetune_settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings as FinetuneConfig fields, checked now (an unknown key names the closest one)."""
    from ..finetune.config import FINETUNE_SCHEMA, FinetuneConfig
    from ..runtime.config_loader import check_fields, parse_override

    values = dict(parse_override(p) for p in pairs)
    cfg = FINETUNE_SCHEMA.merge(FinetuneConfig(), values, where=" (--finetune)")
    check_fields(cfg, where=" (--finetune)")
    return {k: getattr(cfg, k) for k in values}
