"""Zero-shot classification by class names with an aligned model (dinolab align); prints accuracy when DATA has labels.

Each class name is put in prompt templates ("a photo of a {}." ...); the mean of the prompts'
embeddings is the class embedding, and each image gets the class with the most similar
embedding. DATA is an image folder, class-per-subfolder folder, .txt list, builtin:shapes, or
an .npz of embeddings (from `dinolab search --save-embeddings`, or `dinolab embed --patch-mean`
of the same backbone at the aligned model's image size). Without --classes the class folders'
names are used. When DATA has classes, their names are matched to --classes and the accuracy
is printed next to chance. --out writes one CSV row per image: path, predicted class, score,
true class.
Examples:
  dinolab zeroshot --aligned aligned/ --classes "circle,square,triangle,star,cross" builtin:shapes
  dinolab zeroshot --aligned aligned/ photos_by_class/ --out preds.csv
"""

from __future__ import annotations

import argparse

from ..eval.options import add_inference_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="images (folder, class folders, .txt list, builtin:NAME) or .npz")
    parser.add_argument("--aligned", required=True, metavar="A", help="aligned model folder (from dinolab align)")
    parser.add_argument("--weights", default=None, metavar="W",
                        help="backbone weights (default: the copy or reference in A; must be the aligned backbone)")
    parser.add_argument("--classes", default=None, metavar="NAMES",
                        help="comma-separated class names (default: DATA's class folder names)")
    parser.add_argument("--template", action="append", default=None, metavar="T",
                        help="prompt template with {} for the class name; repeat for several "
                             "(default: 'a {}.', 'a photo of a {}.', 'a picture of a {}.', 'an image of a {}.')")
    parser.add_argument("--out", default=None, metavar="PREDS.csv", help="write the predictions there")
    add_inference_arguments(parser, title="embedding images (default size and normalisation: those the aligned "
                                          "model was trained with)")
    parser.add_argument("--force", action="store_true", help="overwrite --out")


def run(args: argparse.Namespace) -> int:
    import csv
    import io
    import sys
    import warnings

    from ..data.badfiles import print_skipped
    from ..errors import ConfigError
    from ..eval.options import InferenceOptions
    from ..io import atomic_save_text, check_writable
    from ..text import load_aligned, zeroshot_classify
    from ..text.aligned import images_or_embeddings
    from ..text.vocab import UnknownWordsWarning, check_class_names
    from ..text.zeroshot import DEFAULT_TEMPLATES, class_name_from_folder

    out = check_writable(args.out, force=args.force) if args.out else None
    options = InferenceOptions.from_args(args)
    model = load_aligned(args.aligned, weights=args.weights, device=options.device)
    model.preprocess = options.preprocess_for(model, announce="zeroshot")
    images = images_or_embeddings(args.data, model)
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    elif getattr(images, "classes", None):
        classes = [class_name_from_folder(c) for c in images.classes]
    else:
        raise ConfigError(f"{args.data} has no class folders, so the classes must be given: "
                          f"--classes \"cat,dog,...\"")
    templates = tuple(args.template or DEFAULT_TEMPLATES)
    for message in check_class_names(model.tokenizer, classes, templates):
        print(f"warning: {message}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # printed above
        result = zeroshot_classify(model, images, classes, templates=templates, batch_size=options.batch_size,
                                   device=options.device, precision=options.precision,
                                   num_workers=options.num_workers)
    if out is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "predicted", "score", "true"])
        for k, path in enumerate(result.paths):
            p = int(result.predictions[k])
            true = "" if result.labels is None or result.labels[k] < 0 else result.classes[result.labels[k]]
            w.writerow([path, result.classes[p], f"{result.scores[k, p]:.6f}", true])
        atomic_save_text(out, buf.getvalue())
    n = len(result.paths)
    print(f"classified {n} images among {len(classes)} classes ({', '.join(classes)})" + (f" -> {out}" if out else ""))
    if result.accuracy is not None:
        known = int((result.labels >= 0).sum())
        print(f"zero-shot accuracy: {result.accuracy:.4f} on {known} labelled images (chance {result.chance:.4f})")
    else:
        counts = {c: 0 for c in classes}
        for c in result.predicted_classes:
            counts[c] += 1
        print("predicted: " + ", ".join(f"{c} {k}" for c, k in counts.items()))
    print_skipped(result.bad)
    return 0
