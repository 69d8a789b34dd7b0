"""Predict the class of new images with any classifier dinolab makes; one CSV row per image.

MODEL is a classifier saved by `dinolab knn|fewshot|linear ... --save C.safetensors` (its backbone
is read from the recorded path, or --weights, and must have the recorded fingerprint), an aligned
model folder from `dinolab align` with --classes (zero-shot), or a `dinolab finetune` folder (or
its classifier.safetensors). Images are prepared as the model records (--image-size / --mean /
--std override it; the line on stderr says what is used). The CSV has path,label,prob (top-1),
then label_2,prob_2 ... with --top-k K, and true when DATA has class folders (accuracy is printed).
--tta flip averages the probabilities of each image and its mirror. Unreadable files are skipped
and listed in OUT's name with .bad_files.log.
Examples:
  dinolab predict knn.safetensors photos/ --out predictions.csv --top-k 3
  dinolab predict aligned/ photos/ --classes "cat,dog,bird" --out predictions.csv --tta flip
  dinolab predict finetuned/ data/val --out val_predictions.csv
"""

from __future__ import annotations

import argparse

from ..eval.options import add_inference_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="saved classifier (.safetensors), aligned model folder, or "
                                                       "`dinolab finetune` folder")
    parser.add_argument("data", metavar="DATA", help="image folder, class folders, .txt list of paths, or builtin:NAME")
    parser.add_argument("--out", required=True, metavar="PREDICTIONS.csv", help="where to write the predictions")
    parser.add_argument("--weights", default=None, metavar="W",
                        help="backbone weights in place of the recorded ones (must be the same backbone)")
    parser.add_argument("--classes", default=None, metavar="NAMES",
                        help="comma-separated class names, for an aligned model (zero-shot)")
    parser.add_argument("--template", action="append", default=None, metavar="T",
                        help="zero-shot prompt template with {} (repeat for several; default as `dinolab zeroshot`)")
    parser.add_argument("--top-k", type=int, default=1, metavar="K", help="also write the K best classes (default 1)")
    parser.add_argument("--tta", choices=["none", "flip"], default="none",
                        help="test-time augmentation: flip averages the image and its horizontal mirror")
    add_inference_arguments(parser)
    parser.add_argument("--max-bad-fraction", type=float, default=0.1, metavar="F",
                        help="stop if more than this share of the files cannot be read (default 0.1)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    from ..data import BadFileLog, ImageDataset
    from ..data.badfiles import warnings_held_back
    from ..errors import ConfigError
    from ..eval.options import InferenceOptions
    from ..io import atomic_save_text, check_writable
    from ..predict import load_predictor, predict_images, predictions_csv

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    options = InferenceOptions.from_args(args)
    out = check_writable(args.out, force=args.force)
    log_path = check_writable(out.with_name(out.stem + ".bad_files.log"), force=args.force)
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    predictor = load_predictor(args.model, weights=args.weights, classes=classes, templates=args.template)
    predictor.preprocess = options.preprocess_for(predictor, announce="predict")
    dataset = ImageDataset(args.data)
    with warnings_held_back():  # named below
        pred = predict_images(predictor, dataset, tta=args.tta, max_bad_fraction=args.max_bad_fraction,
                              bad_file_log=log_path, limit_name="--max-bad-fraction", **options.embed_kwargs())
    atomic_save_text(out, predictions_csv(pred, args.top_k))
    print(f"predicted {len(pred.paths)} of {len(dataset)} images of {args.data} with the {predictor.kind} classifier "
          f"({len(pred.classes)} classes) -> {out}")
    _summary(pred)
    if pred.bad:
        bad = BadFileLog(log_path=log_path)
        bad.add(pred.bad)
        print(bad.summary())
    return 0


def _summary(pred) -> None:
    import numpy as np

    counts = np.bincount(pred.predictions, minlength=len(pred.classes))
    print("predicted: " + ", ".join(f"{c} {n}" for c, n in zip(pred.classes, counts)))
    if pred.labels is not None and (pred.labels >= 0).any():
        known = pred.labels >= 0
        acc = float((pred.predictions[known] == pred.labels[known]).mean())
        print(f"accuracy {acc:.4f} on the {int(known.sum())} images whose class folder is one of the model's classes")
