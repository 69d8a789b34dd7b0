"""Curate a pool of images: retrieve what looks like your seed images, or sample it balanced over concepts.

Retrieval (as for DINOv2's LVD-142M):
  dinolab curate --pool pool.npz --seeds mine.npz --k 4 --out cur/
      the --k nearest pool images of every seed (the per-seed cap), their union, optionally
      near-deduplicated (--dedup-threshold, --dedup-verify as in `dinolab dedup --verify`) and
      capped (--max-images, most similar kept).
  dinolab curate --pool pool.npz --seeds mine.npz --clusters 100000 --min-seeds 4 --per-cluster 10000 --out cur/
      cluster-based, for large seed sets: k-means the pool, take up to --per-cluster images
      from every cluster holding at least --min-seeds seeds.

Balanced sampling (hierarchical k-means, Vo et al. 2024):
  dinolab curate --pool pool.npz --balanced --target 100000 --clusters 10000,1000,100 --out cur/
      k-means at each level (level t clusters the centroids of level t-1), refined by
      --resamples rounds, then a top-down balanced draw of --target images. The clustering is
      saved as OUT/clustering.npz; pass it back with --clustering to draw another target quickly.

Pool and seeds: .npz from `dinolab embed`, an N×D .npy (memory-mapped), or images with --weights.
Outputs: OUT/selected.txt (one path a line) and OUT/selection.csv (index, path and why).
No image is copied, moved or deleted.
"""

from __future__ import annotations

import argparse

from .dedup import _embed_arguments, _embed_options, _search_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", required=True, help="uncurated pool: embeddings (.npz/.npy) or images (with --weights)")
    parser.add_argument("--seeds", help="examples of what you want: embeddings or images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--weights", help="model to embed images with")
    parser.add_argument("--paths", help="text file with one path per row of a pool .npy")
    parser.add_argument("--k", type=int, default=4, help="pool images per seed (default 4; LVD-142M used 4 and 32)")
    parser.add_argument("--min-similarity", type=float, help="drop retrieved images less similar than this to their seed")
    parser.add_argument("--dedup-threshold", type=float, help="remove near-duplicates (cosine ≥ this) from the selection")
    parser.add_argument("--dedup-verify", action="store_true",
                        help="with --dedup-threshold: only pairs whose pixels align are duplicates (see dinolab dedup --verify)")
    parser.add_argument("--max-images", type=int, help="cap on the number of retrieved images")
    parser.add_argument("--clusters", help="retrieval: pool k-means clusters (one number); "
                                           "--balanced: clusters per level, bottom up (e.g. 1000,100)")
    parser.add_argument("--min-seeds", type=int, default=4, help="cluster retrieval: seeds needed in a cluster (default 4)")
    parser.add_argument("--per-cluster", type=int, default=10000, help="cluster retrieval: images per cluster (default 10000)")
    parser.add_argument("--balanced", action="store_true", help="balanced sampling over a hierarchical k-means")
    parser.add_argument("--target", type=int, help="--balanced: number of images to select")
    parser.add_argument("--levels", type=int, help="--balanced: number of levels (must match --clusters)")
    parser.add_argument("--resamples", default="0",
                        help="--balanced: resampling rounds per level, e.g. 10 (each reclusters the points closest "
                             "to the centroids, --sample-sizes per cluster)")
    parser.add_argument("--sample-sizes", default="10", help="--balanced: points per cluster when resampling, per level")
    parser.add_argument("--strategy", choices=("random", "closest"), default="random",
                        help="which images to take inside a cluster (default random)")
    parser.add_argument("--clustering", help="--balanced: reuse OUT/clustering.npz from an earlier run")
    parser.add_argument("--iters", type=int, default=20, help="k-means iterations (default 20)")
    parser.add_argument("--kmeans-backend", choices=("numpy", "faiss"), default="numpy", help="k-means implementation")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    _search_arguments(parser)
    _embed_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dinolab.curate.store import is_embeddings_file, load_or_embed
    from dinolab.errors import ConfigError
    from dinolab.io import check_writable

    if args.balanced == bool(args.seeds):
        raise ConfigError("give either --seeds (retrieval) or --balanced --target N (balanced sampling), not "
                          + ("both" if args.balanced else "neither"))
    if args.dedup_verify and args.dedup_threshold is None:
        raise ConfigError("--dedup-verify checks the pairs that --dedup-threshold finds; give --dedup-threshold "
                          "too (e.g. 0.8, the candidate threshold of `dinolab dedup --verify`)")
    out = Path(args.out)
    outputs = ["selected.txt", "selection.csv"] + (["clustering.npz"] if args.balanced and not args.clustering else [])
    for name in outputs:
        check_writable(out / name, force=args.force)
    embed = _embed_options(args, "curate")
    caches = {}
    for name, src in (("pool", args.pool), ("seeds", args.seeds)):
        if src and not is_embeddings_file(src):
            caches[name] = check_writable(out / f"{name}_embeddings.npz", force=args.force)
    pool = load_or_embed(args.pool, cache=caches.get("pool"), paths=args.paths, **embed)
    if args.balanced:
        rows, header = _balanced(args, pool, out)
    else:
        seeds = load_or_embed(args.seeds, cache=caches.get("seeds"), **embed)
        rows, header = _retrieve(args, pool, seeds)
    _write(out, pool, rows, header)
    print(f"selected {len(rows)} of {len(pool)} pool images; list in {out}/selected.txt")
    return 0


def _retrieve(args, pool, seeds):
    from dinolab.curate.retrieve import retrieve_by_clusters, retrieve_neighbors

    search = dict(backend=args.backend, index=args.index, nprobe=args.nprobe)
    if args.clusters:
        res = retrieve_by_clusters(pool, seeds, _one_int(args.clusters), min_seeds=args.min_seeds,
                                   per_cluster=args.per_cluster, max_images=args.max_images, selection=args.strategy,
                                   n_iter=args.iters, seed=args.seed, backend=args.kmeans_backend)
        rows = [[int(i), int(c), int(res.seeds_per_cluster[c]), round(float(s), 4)]
                for i, c, s in zip(res.indices, res.cluster, res.similarity)]
        return rows, ["cluster", "seeds_in_cluster", "similarity_to_centroid"]
    from dinolab.curate.verify import PixelVerifier

    res = retrieve_neighbors(pool, seeds, args.k, min_similarity=args.min_similarity, max_images=args.max_images,
                             dedup_threshold=args.dedup_threshold,
                             dedup_verify=PixelVerifier() if args.dedup_verify else None, **search)
    seed_paths = seeds.paths
    rows = [[int(i), seed_paths[j], round(float(s), 4)] for i, j, s in zip(res.indices, res.seed, res.similarity)]
    return rows, ["seed", "similarity"]


def _balanced(args, pool, out):
    from dinolab.curate.kmeans import HierarchicalKMeans, hierarchical_kmeans
    from dinolab.curate.sampling import balanced_sample
    from dinolab.errors import ConfigError

    if not args.target or args.target < 1:
        raise ConfigError("--balanced needs --target N, the number of images to select (N ≥ 1)")
    if args.clustering:
        tree = HierarchicalKMeans.load(args.clustering)
        if tree.n_points != len(pool):
            raise ConfigError(f"{args.clustering} clusters {tree.n_points} images but the pool has {len(pool)}; "
                              f"cluster this pool again (drop --clustering)")
    else:
        if not args.clusters:
            raise ConfigError("--balanced needs --clusters, e.g. --clusters 1000,100 (bottom level first)")
        clusters = _int_list(args.clusters, "--clusters")
        if args.levels is not None and args.levels != len(clusters):
            raise ConfigError(f"--levels {args.levels} but --clusters lists {len(clusters)} level(s); "
                              f"give one cluster count per level, e.g. --clusters 1000,100 --levels 2")
        tree = hierarchical_kmeans(pool, clusters, n_iter=args.iters, n_resamples=_int_list(args.resamples, "--resamples"),
                                   sample_sizes=_int_list(args.sample_sizes, "--sample-sizes"),
                                   sample_strategy="closest",
                                   seed=args.seed, backend=args.kmeans_backend)
        tree.save(out / "clustering.npz")
    idx = balanced_sample(tree, args.target, strategy=args.strategy, seed=args.seed)
    labels = [tree.point_labels(t)[idx] for t in range(len(tree.levels))]
    rows = [[int(i), *(int(lab[n]) for lab in labels)] for n, i in enumerate(idx)]
    return rows, [f"cluster_level{t + 1}" for t in range(len(tree.levels))]


def _write(out, pool, rows, header) -> None:
    import csv
    import io

    from dinolab.io import atomic_save_text

    paths = pool.paths
    atomic_save_text(out / "selected.txt", "".join(paths[r[0]] + "\n" for r in rows))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["index", "path", *header])
    w.writerows([r[0], paths[r[0]], *r[1:]] for r in rows)
    atomic_save_text(out / "selection.csv", buf.getvalue())


def _int_list(text: str, flag: str) -> list[int]:
    from dinolab.errors import ConfigError

    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give whole numbers separated by commas, e.g. 1000,100") from None
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"{flag} {text!r}: give one or more non-negative whole numbers, e.g. 1000,100")
    return values


def _one_int(text: str) -> int:
    from dinolab.errors import ConfigError

    values = _int_list(text, "--clusters")
    if len(values) != 1 or values[0] < 1:
        raise ConfigError(f"--clusters {text!r}: cluster retrieval takes one number of pool clusters, e.g. 100000 "
                          f"(comma lists are for --balanced)")
    return values[0]
