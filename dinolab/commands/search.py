"""Text-to-image search with an aligned model (dinolab align): print the images that best match a text.

DATA is an image folder, class folders, .txt list, builtin:shapes, or an .npz of embeddings:
one written by --save-embeddings (search many texts without re-reading the images), or one from
`dinolab embed --patch-mean` of the same backbone at the aligned model's image size. Prints one
line per result: rank, cosine similarity, path.
Examples:
  dinolab search --aligned aligned/ --text "a red star" photos/ --top-k 5 --save-embeddings photos.aligned.npz
  dinolab search --aligned aligned/ --text "a blue circle" photos.aligned.npz
"""

from __future__ import annotations

import argparse

from ..eval.options import add_inference_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="images (folder, .txt list, builtin:NAME) or embeddings .npz")
    parser.add_argument("--aligned", required=True, metavar="A", help="aligned model folder (from dinolab align)")
    parser.add_argument("--text", required=True, help="what to look for, e.g. \"a red star\"")
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="number of results (default 10)")
    parser.add_argument("--weights", default=None, metavar="W",
                        help="backbone weights (default: the copy or reference in A; must be the aligned backbone)")
    parser.add_argument("--save-embeddings", default=None, metavar="FILE.npz",
                        help="also save the image embeddings for later searches")
    add_inference_arguments(parser, title="embedding images (default size and normalisation: those the aligned "
                                          "model was trained with)")
    parser.add_argument("--force", action="store_true", help="overwrite --save-embeddings")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from ..data.badfiles import print_skipped
    from ..eval.options import InferenceOptions
    from ..io import check_writable
    from ..text import embed_images, load_aligned, text_search
    from ..text.aligned import AlignedEmbeddings, images_or_embeddings
    from ..text.vocab import UnknownWordsWarning, check_query

    save = check_writable(args.save_embeddings, force=args.force) if args.save_embeddings else None
    options = InferenceOptions.from_args(args)
    model = load_aligned(args.aligned, weights=args.weights, device=options.device)
    model.preprocess = options.preprocess_for(model, announce="search")
    for message in check_query(model.tokenizer, args.text):  # before the images are read
        print(f"warning: {message}", file=sys.stderr)
    images = images_or_embeddings(args.data, model)
    if not isinstance(images, AlignedEmbeddings):
        images = embed_images(model, images, batch_size=options.batch_size, device=options.device,
                              precision=options.precision, num_workers=options.num_workers,
                              progress=options.progress)
    if save is not None:
        images.save(save)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownWordsWarning)  # printed above
        hits = text_search(model, args.text, images, top_k=args.top_k)
    for h in hits:
        print(f"{h.rank}\t{h.score:.4f}\t{h.path}")
    print_skipped(images.bad)
    return 0
