"""Turn images into embeddings (one CLS vector per image, optionally the mean patch vector) in an .npz.

WEIGHTS is any file or folder dinolab.load_model reads (dinolab, DINO, DINOv2, DINOv3, Hugging
Face). DATA is a folder of images (recursive), a class-per-subfolder folder (labels and class
names are saved too), a .txt file with one image path per line, or builtin:digits /
builtin:shapes. Images are prepared as the model records (its input size, resize rule and
normalisation: the global crop size of a `dinolab train` export, 224 px for official weights;
--image-size / --mean / --std override it; the line on stderr says what was used). The .npz
holds paths, cls (N x D), patch_mean (with --patch-mean), labels and classes (class folders),
bad_paths and bad_reasons. Unreadable files are skipped and listed in
OUT's name with .bad_files.log; the run stops if more than --max-bad-fraction of them are bad.
Example:
  dinolab embed dinov2_vits14.pth photos/ --out photos.npz --patch-mean
"""

from __future__ import annotations

import argparse

from ..eval.options import add_inference_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="WEIGHTS", help="weights file or folder (any format dinolab.load_model reads)")
    parser.add_argument("data", metavar="DATA", help="image folder, class folders, .txt list of paths, or builtin:NAME")
    parser.add_argument("--out", required=True, metavar="FILE.npz", help="where to write the embeddings")
    parser.add_argument("--patch-mean", action="store_true", help="also save the mean of the last block's patch tokens")
    parser.add_argument("--n-last-blocks", type=int, default=1, metavar="N",
                        help="concatenate the CLS tokens of the last N blocks (default 1)")
    add_inference_arguments(parser, extra=("runtime",))
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="for a .txt list: resolve its paths against DIR and refuse paths outside it")
    parser.add_argument("--max-bad-fraction", type=float, default=0.1, metavar="F",
                        help="stop if more than this share of the files cannot be read (default 0.1)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    from ..data import BadFileLog, ImageDataset
    from ..data.badfiles import warnings_held_back
    from ..eval.features import embed
    from ..eval.options import InferenceOptions
    from ..io import check_writable

    options = InferenceOptions.from_args(args)
    out = check_writable(args.out, force=args.force)
    log_path = check_writable(out.with_name(out.stem + ".bad_files.log"), force=args.force)
    dataset = ImageDataset(args.data, root=args.root)
    model = options.load_model(args.weights)
    preprocess = options.preprocess_for(model, announce="embed")
    with warnings_held_back():  # the summary below names the bad files
        emb = embed(model, dataset, preprocess=preprocess, patch_mean=args.patch_mean,
                    n_last_blocks=args.n_last_blocks, max_bad_fraction=args.max_bad_fraction, bad_file_log=log_path,
                    limit_name="--max-bad-fraction", **options.embed_kwargs())
    emb.save(out)
    extra = f", patch_mean {emb.patch_mean.shape[1]}" if emb.patch_mean is not None else ""
    labels = f", {len(emb.classes)} classes" if emb.classes else ""
    print(f"embedded {len(emb)} of {len(dataset)} images from {args.data}: cls dimension {emb.dim}{extra}{labels} "
          f"-> {out}")
    if emb.bad:
        bad = BadFileLog(log_path=log_path)
        bad.add(emb.bad)
        print(bad.summary())
    return 0
