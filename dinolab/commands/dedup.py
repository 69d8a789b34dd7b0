"""Find near-duplicate images (and test-set leaks); write kept/removed lists, never touching the images.

Embeddings come from an .npz written by `dinolab embed`, a raw N×D .npy (memory-mapped; paths
from --paths or a .txt beside it), or an image folder embedded here with --weights (saved as
OUT/embeddings.npz for reruns). Every image is linked to those of its --k nearest neighbours with
cosine similarity ≥ --threshold; each connected group keeps one image (--keep largest: most
pixels, then largest file, then first in input order; --keep first: first in input order).

Thresholds depend on the embedding space. --space dino (default, for dinolab/DINO embeddings)
uses 0.9 (self) and 0.8 (--against); --space sscd uses LVD-142M's 0.6 and 0.45, which suit
copy-detection embeddings only: on DINO embeddings 0.6 merges different photos of similar things.

Pixel verification (--verify; on by default when the images are at hand) checks every candidate
pair in the images themselves before linking it: the pictures are aligned (one resized inside the
other, up to --verify-max-crop of each side cropped, mirrored or not) and their normalised
cross-correlation must reach --verify-min-score. Resized, re-encoded and slightly cropped copies
pass; different photos that a semantic embedding puts close together (two tiles of one texture,
two drawings in one style) do not; pictures with little fine detail (drawings, icons, upscaled
tiny images) must reach the stricter --verify-low-detail-min-score, since different drawings of one
shape align well. Heavily edited copies (rotated, strongly cropped, overlaid) do
not pass either: use --verify off (and a high --threshold) to group those by the embeddings alone.
With verification the embedding threshold only picks candidates, so it defaults lower (0.8 for
dino). --verify auto (the default) verifies when the embeddings' paths are image files that exist
here; --verify on insists (an error without paths), --verify off never reads the images.

Outputs in --out: kept.txt, removed.txt (one path a line), groups.json and groups.csv (every
group with its members, the kept one, similarities, and leaks to the evaluation set; with --verify
also the candidate pairs it rejected).

Examples:
  dinolab dedup photos/ --weights dinov2_vits14.pth --out dedup/
  dinolab dedup pool.npz --against test.npz --threshold 0.92 --out dedup/
  dinolab dedup pool.npz --verify off --threshold 0.95 --out dedup/
"""

from __future__ import annotations

import argparse

OUTPUTS = ("kept.txt", "removed.txt", "groups.json", "groups.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="embeddings (.npz from `dinolab embed`, or N×D .npy) or images (with --weights)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--weights", help="model to embed images with (when DATA is images)")
    parser.add_argument("--paths", help="text file with one path per row of a .npy")
    parser.add_argument("--space", choices=("dino", "sscd"), default="dino",
                        help="embedding space, sets the default thresholds (default: dino)")
    parser.add_argument("--threshold", type=float, help="cosine similarity for duplicates (dino 0.9, sscd 0.6)")
    parser.add_argument("--k", type=int, default=64, help="neighbours per image in the graph (default 64, as LVD-142M)")
    parser.add_argument("--keep", choices=("largest", "first"), default="largest",
                        help="which member of a group to keep (default: largest image)")
    parser.add_argument("--against", help="evaluation embeddings or images: remove pool groups close to any of them")
    parser.add_argument("--against-threshold", type=float,
                        help="cosine similarity for --against (dino 0.8, sscd 0.45)")
    parser.add_argument("--verify", nargs="?", const="on", default="auto", choices=("auto", "on", "off"),
                        help="link only candidate pairs whose pixels align (resized/re-encoded/cropped copies); "
                             "auto (default): when the images exist here")
    parser.add_argument("--verify-min-score", type=float, default=0.75,
                        help="normalised cross-correlation a verified pair reaches (default 0.75)")
    parser.add_argument("--verify-max-crop", type=float, default=0.2,
                        help="share of each side a verified copy may have lost to cropping (default 0.2)")
    parser.add_argument("--verify-low-detail-min-score", type=float, default=0.98,
                        help="NCC a pair of low-detail pictures (drawings, icons, upscaled tiny images) must reach, "
                             "since different drawings of one shape correlate highly (default 0.98; "
                             "--verify-min-score or lower turns the stricter rule off)")
    # near-duplicates share a cell, or sit in the next one: 2 probes found all planted pairs at 1M rows
    _search_arguments(parser, nprobe=2)
    _embed_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _search_arguments(parser: argparse.ArgumentParser, nprobe: int = 4) -> None:
    parser.add_argument("--key", choices=("cls", "patch_mean"), default="cls", help="which vectors of an .npz to use")
    parser.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto",
                        help="exact search with faiss or torch (default: faiss when installed)")
    parser.add_argument("--index", choices=("auto", "flat", "cells", "ivf"), default="auto",
                        help="flat = exact; cells/ivf = approximate for large N (auto: cells from 50k rows)")
    parser.add_argument("--nprobe", type=int, default=nprobe,
                        help=f"cells searched per query by approximate indexes (default {nprobe})")


def _embed_arguments(parser: argparse.ArgumentParser) -> None:
    from ..eval.options import add_inference_arguments

    add_inference_arguments(parser, title="embedding images (with --weights)")


def _embed_options(args: argparse.Namespace, command: str) -> dict:
    """Keyword arguments of :func:`~dinolab.curate.store.load_or_embed` from the command line."""
    from ..eval.options import InferenceOptions

    return dict(weights=args.weights, key=args.key, options=InferenceOptions.from_args(args), announce=command)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dinolab.curate.dedup import THRESHOLDS, VERIFIED_THRESHOLDS, find_duplicates
    from dinolab.curate.store import is_embeddings_file, load_or_embed
    from dinolab.curate.verify import PixelVerifier
    from dinolab.io import check_writable

    out = Path(args.out)
    for name in OUTPUTS:
        check_writable(out / name, force=args.force)
    cache = None if is_embeddings_file(args.data) else check_writable(out / "embeddings.npz", force=args.force)
    against_cache = None
    if args.against and not is_embeddings_file(args.against):
        against_cache = check_writable(out / "against_embeddings.npz", force=args.force)
    embed = _embed_options(args, "dedup")
    pool = load_or_embed(args.data, cache=cache, paths=args.paths, **embed)
    verifying = args.verify == "on" or (args.verify == "auto" and _images_at_hand(pool))
    verify = (PixelVerifier(min_score=args.verify_min_score, max_crop=args.verify_max_crop,
                            low_detail_min_score=args.verify_low_detail_min_score) if verifying else None)
    self_t, against_t = THRESHOLDS[args.space]
    if verify is not None:
        self_t = VERIFIED_THRESHOLDS[args.space]
    threshold = self_t if args.threshold is None else args.threshold
    against_threshold = against_t if args.against_threshold is None else args.against_threshold
    print(f"pixel verification {'on' if verifying else 'off'}"
          + (" (the images are not at hand)" if args.verify == "auto" and not verifying else "")
          + f"; embedding threshold {threshold}")
    against = load_or_embed(args.against, cache=against_cache, **embed) if args.against else None
    result = find_duplicates(pool, threshold=threshold, k=args.k, keep=args.keep, against=against,
                             against_threshold=against_threshold, verify=verify, backend=args.backend, index=args.index,
                             nprobe=args.nprobe)
    result.save(out)
    removed = int((~result.keep).sum())
    print(f"{len(result.groups)} duplicate group(s); kept {int(result.keep.sum())} of {len(result.paths)}, "
          f"removed {removed}" + (f" ({len(result.leaked)} close to {args.against})" if against is not None else "")
          + (f"; {len(result.edges)} candidate pair(s) verified, {len(result.rejected_edges)} rejected by their pixels"
             if verify is not None else "")
          + f"; lists in {out}/ (no image was moved or deleted)")
    return 0


def _images_at_hand(store, sample: int = 100) -> bool:
    """Whether the rows name image files that exist here (checked on up to ``sample`` evenly spaced rows)."""
    import os

    if not store.has_paths or len(store) == 0:
        return False
    paths = store.paths
    step = max(1, len(paths) // sample)
    return all(os.path.isfile(p) for p in paths[::step][:sample])

