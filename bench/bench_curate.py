"""Curation benchmarks: near-duplicate quality on planted copies, and dedup / k-means at one million rows.

planted  Builds a folder of distinct images (tiles of scikit-image's bundled photographs plus
         generated pictures), plants near-duplicates of some of them (resized, re-encoded JPEG,
         slightly cropped, and all three at once), embeds everything with a dinolab model, and
         prints, per cosine threshold, the recall of planted (original, copy) pairs and the share of
         false groups (duplicate groups that mix two different source images); with --verify,
         also with pixel verification of the candidate pairs (dinolab dedup --verify). Needs trained
         weights (--weights): a randomly initialised ViT maps every picture to nearly the same
         vector, so its numbers mean nothing (--random-init runs the pipeline anyway, to test it).

           python bench/bench_curate.py planted --weights dinov2_vits14.pth [--image-size 224]

scale    One million synthetic 384-d float32 embeddings (1,000 Gaussian concepts, within-concept
         cosine ≈ 0.5, plus 10,000 planted near-duplicate pairs at cosine ≈ 0.96), stored as a
         memory-mapped .npy. Runs, each in a fresh process: dedup (k=64, threshold 0.9,
         approximate cell search), k-means with k=1,000 (this code on all points and on 256 points
         per centroid, and faiss when installed).
         Prints wall time, peak resident memory (ru_maxrss: includes the memory-mapped pages the
         process touched) and the NumPy peak from tracemalloc (allocations made through NumPy).

           python bench/bench_curate.py scale [--n 1000000] [--dim 384] [--iters 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout, not an installed copy

SKIMAGE_IMAGES = ["astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
                  "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                  "microaneurysms", "moon", "page", "retina", "rocket", "text"]
THRESHOLDS = [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98]


# ---------------------------------------------------------------- planted near-duplicates
def build_planted_folder(root: Path, n_generated: int = 60, tile: int = 256, seed: int = 0) -> dict:
    """Write originals and their copies under ``root``; return {path: family id} and the copy kinds."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    originals = []
    for name in SKIMAGE_IMAGES:
        arr = _skimage(name)
        if arr is None:
            continue
        im = Image.fromarray(arr).convert("RGB")
        w, h = im.size
        if min(w, h) < tile:
            im = im.resize((max(tile, w * tile // min(w, h)), max(tile, h * tile // min(w, h))), Image.BICUBIC)
            w, h = im.size
        for ty in range(h // tile):  # non-overlapping tiles: distinct, but similar, pictures
            for tx in range(w // tile):
                originals.append((f"{name}_{ty}{tx}", im.crop((tx * tile, ty * tile, (tx + 1) * tile, (ty + 1) * tile))))
    for i in range(n_generated):
        im = Image.new("RGB", (tile, tile), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.integers(0, tile, 2)
            x1, y1 = (x0, y0) + rng.integers(20, tile // 2, 2)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            [draw.ellipse, draw.rectangle][int(rng.integers(2))]([int(x0), int(y0), int(x1), int(y1)], fill=colour)
        originals.append((f"generated_{i:03d}", im))

    originals = _distinct(originals)
    families, kinds = {}, {}
    for fam, (name, im) in enumerate(originals):
        path = root / f"{name}.png"
        im.save(path)
        families[str(path)] = fam
        if fam % 2:  # half of the originals get copies
            continue
        for kind in _copy_kinds(rng):
            copy = _make_copy(im, kind, rng)
            cpath = root / f"{name}__{kind}.jpg"
            copy.save(cpath, quality=int(rng.integers(30, 60)) if "jpeg" in kind or kind == "all" else 92)
            families[str(cpath)] = fam
            kinds[str(cpath)] = kind
    return {"families": families, "kinds": kinds}


def _distinct(originals: list, max_abs_diff: float = 12.0) -> list:
    """Drop originals that are themselves near-duplicates of an earlier one (mean absolute difference of
    their 32x32 RGB thumbnails below ``max_abs_diff`` of 255, e.g. the all-black corner tiles of
    ``retina`` or ``hubble_deep_field``): grouping those is right, so they cannot count as false groups."""
    kept, thumbs = [], []
    for name, im in originals:
        t = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.float32)
        if any(np.abs(t - other).mean() < max_abs_diff for other in thumbs):
            continue
        kept.append((name, im))
        thumbs.append(t)
    if len(kept) < len(originals):
        print(f"{len(originals) - len(kept)} of {len(originals)} originals dropped: near-duplicates of another original")
    return kept


def _skimage(name: str):
    try:
        from skimage import data

        return getattr(data, name)()
    except Exception:  # not bundled in this version (some need a download)
        return None


def _copy_kinds(rng) -> list[str]:
    all_kinds = ["resize", "jpeg", "crop", "all"]
    return [all_kinds[i] for i in sorted(rng.choice(4, int(rng.integers(1, 4)), replace=False))]


def _make_copy(im, kind: str, rng):
    from PIL import Image

    w, h = im.size
    if kind in ("crop", "all"):
        keep = rng.uniform(0.85, 0.95)
        cw, ch = int(w * keep), int(h * keep)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
    if kind in ("resize", "all"):
        s = rng.uniform(0.4, 0.7)
        im = im.resize((max(16, int(im.width * s)), max(16, int(im.height * s))), Image.BICUBIC)
    return im


def score(groups: list[np.ndarray], paths: list[str], families: dict, kinds: dict) -> dict:
    """Recall of planted (original, copy) pairs and the share of groups mixing families."""
    fam = np.array([families[p] for p in paths])
    group_of = np.full(len(paths), -1)
    for gi, g in enumerate(groups):
        group_of[g] = gi
    index = {p: i for i, p in enumerate(paths)}
    found, total, by_kind = 0, 0, {}
    for copy, kind in kinds.items():
        orig = next(p for p, f in families.items() if f == families[copy] and p not in kinds)
        i, j = index[orig], index[copy]
        hit = group_of[i] >= 0 and group_of[i] == group_of[j]
        found += hit
        total += 1
        k = by_kind.setdefault(kind, [0, 0])
        k[0] += hit
        k[1] += 1
    false = sum(len(set(fam[g].tolist())) > 1 for g in groups)
    return {"recall": found / max(total, 1), "pairs": total, "groups": len(groups),
            "false_groups": false, "false_rate": false / max(len(groups), 1),
            "recall_by_kind": {k: v[0] / v[1] for k, v in sorted(by_kind.items())}}


def run_planted(args) -> None:
    import torch

    import dinolab
    from dinolab.curate import EmbeddingStore
    from dinolab.curate.dedup import DINO_THRESHOLD, VERIFIED_THRESHOLDS
    from dinolab.curate.verify import PixelVerifier

    if not args.weights and not args.random_init:
        sys.exit("planted: pass --weights FILE (trained DINO/DINOv2/DINOv3 weights, any format dinolab.load_model "
                 "reads); --random-init only checks that the pipeline runs (its numbers mean nothing)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dinolab_planted_"))
    truth = build_planted_folder(work / "images", n_generated=args.generated, seed=args.seed)
    print(f"{len(truth['families'])} images in {work / 'images'}: {len(set(truth['families'].values()))} originals, "
          f"{len(truth['kinds'])} planted copies")
    if args.weights:
        model = dinolab.load_model(args.weights)
    else:
        torch.manual_seed(0)
        model = dinolab.create_model(args.arch, img_size=args.image_size)
    emb = dinolab.embed(model, str(work / "images"), image_size=args.image_size, batch_size=args.batch_size,
                        device=args.device, progress=True)
    store = EmbeddingStore(emb.cls, emb.paths)
    print(f"\nmodel: {args.weights or 'random ' + args.arch}, image size {args.image_size}, k={args.k}")
    _threshold_table(store, truth, args.k, None, "embeddings only", DINO_THRESHOLD)
    if args.verify:
        verifier = _CachedScores(PixelVerifier(min_score=args.verify_min_score))
        _threshold_table(store, truth, args.k, verifier, f"with pixel verification (NCC ≥ {args.verify_min_score})",
                         VERIFIED_THRESHOLDS["dino"])
        print(f"pixel verification: {len(verifier.cache)} distinct pairs scored in {verifier.seconds:.1f} s "
              f"({len(verifier.cache) / max(verifier.seconds, 1e-9):.0f} pairs/s, thumbnails included)")
        _score_gap(verifier.cache, store.paths, truth)


def _score_gap(cache: dict, paths: list[str], truth: dict) -> None:
    """How far apart the verifier puts planted (original, copy) pairs and pairs of different pictures."""
    fam, kinds = truth["families"], truth["kinds"]
    direct, different = [], []
    for (i, j), s in cache.items():
        a, b = paths[i], paths[j]
        if fam[a] != fam[b]:
            different.append(s)
        elif (a in kinds) != (b in kinds):  # one original, one copy
            direct.append(s)
    direct, different = np.array(direct), np.array(different)
    if len(direct) and len(different):
        print(f"verifier scores among the candidates: planted (original, copy) pairs min {np.nanmin(direct):.3f} "
              f"({len(direct)} pairs), pairs of different pictures max {np.nanmax(different):.3f} ({len(different)} pairs)")


class _CachedScores:
    """A PixelVerifier that scores each pair once across the thresholds of the table."""

    def __init__(self, verifier) -> None:
        self.verifier, self.min_score, self.cache, self.seconds = verifier, verifier.min_score, {}, 0.0

    def scores(self, paths, edges, progress=True):
        todo = np.array([e for e in map(tuple, edges.tolist()) if e not in self.cache], np.int64).reshape(-1, 2)
        start = time.perf_counter()
        self.cache.update(zip(map(tuple, todo.tolist()), self.verifier.scores(paths, todo, progress)))
        self.seconds += time.perf_counter() - start
        return np.array([self.cache[e] for e in map(tuple, edges.tolist())], np.float32)


def _threshold_table(store, truth: dict, k: int, verifier, title: str, default: float) -> None:
    from dinolab.curate import find_duplicates

    print(f"\n{title}\n")
    print("| threshold | pair recall | groups | false groups | false-group rate | recall resize / jpeg / crop / all |")
    print("|---|---|---|---|---|---|")
    rows = []
    for t in sorted(set(THRESHOLDS + [default])):
        res = find_duplicates(store, threshold=t, k=k, keep="first", verify=verifier, progress=False)
        s = score(res.groups, store.paths, truth["families"], truth["kinds"])
        rows.append((t, s))
        kinds = " / ".join(f"{s['recall_by_kind'].get(k, float('nan')):.2f}" for k in ("resize", "jpeg", "crop", "all"))
        print(f"| {t:.2f} | {s['recall']:.3f} ({s['pairs']} pairs) | {s['groups']} | {s['false_groups']} | "
              f"{s['false_rate']:.3f} | {kinds} |")
    ok = [(t, s) for t, s in rows if s["recall"] >= 0.9 and s["false_rate"] < 0.05]
    if ok:
        lo, hi = min(t for t, _ in ok), max(t for t, _ in ok)
        print(f"\nthresholds meeting recall ≥ 0.90 with < 5% false groups: {lo:.2f} .. {hi:.2f} "
              f"(dinolab dedup's default here: {default})")
    else:
        print("\nno threshold reaches recall ≥ 0.90 with < 5% false groups")


# ---------------------------------------------------------------- one million synthetic embeddings
def make_synthetic(path: Path, n: int, dim: int, concepts: int, pairs: int, seed: int = 0) -> np.ndarray:
    """Write an n×dim float32 .npy (memory-mapped, in chunks); return the planted (src, dst) pairs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(concepts, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x[s:s + m] = centres[rng.integers(0, concepts, m)] + rng.normal(size=(m, dim)).astype(np.float32) / np.sqrt(dim)
    both = rng.choice(n, 2 * pairs, replace=False)
    src, dst = both[:pairs], both[pairs:]
    order = np.argsort(dst)
    src, dst = src[order], dst[order]
    x[dst] = x[src] + 0.4 * rng.normal(size=(pairs, dim)).astype(np.float32) / np.sqrt(dim)
    x.flush()
    del x
    return np.stack([src, dst], 1)


def _measure(fn, kwargs, queue) -> None:
    import dinolab.curate  # noqa: F401  (imports, torch included, are not part of the timing)

    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(**kwargs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, np_peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({"wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss / 2**30, "tracemalloc_peak_gb": np_peak / 2**30, **out})


def _in_child(fn, **kwargs) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(fn, kwargs, q))
    p.start()
    res = q.get()
    p.join()
    return res


def step_dedup(path: str, pairs_path: str, k: int, threshold: float, nprobe: int) -> dict:
    from dinolab.curate import find_duplicates, open_embeddings

    res = find_duplicates(open_embeddings(path), threshold=threshold, k=k, nprobe=nprobe, keep="first")
    planted = np.load(pairs_path)
    roots = np.full(len(res.keep), -1)
    for gi, g in enumerate(res.groups):
        roots[g] = gi
    found = (roots[planted[:, 0]] >= 0) & (roots[planted[:, 0]] == roots[planted[:, 1]])
    planted_set = {tuple(sorted(p)) for p in planted.tolist()}
    false = sum(tuple(g.tolist()) not in planted_set for g in res.groups)
    return {"recall": float(found.mean()), "groups": len(res.groups), "false_groups": int(false),
            "removed": int((~res.keep).sum())}


def step_kmeans(path: str, k: int, iters: int, backend: str, per_centroid: int | None = None) -> dict:
    from dinolab.curate import kmeans, open_embeddings

    res = kmeans(open_embeddings(path), k, n_iter=iters, backend=backend, seed=0,
                 max_points_per_centroid=per_centroid)
    return {"inertia": res.inertia, "iterations": res.n_iter, "empty_clusters": int((res.sizes == 0).sum())}


def run_scale(args) -> None:
    from dinolab.curate.knn import faiss_available

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dinolab_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    path, pairs_path = work / f"synthetic_{args.n}x{args.dim}.npy", work / "planted_pairs.npy"
    t0 = time.perf_counter()
    if not path.exists() or not pairs_path.exists():
        np.save(pairs_path, make_synthetic(path, args.n, args.dim, args.concepts, args.pairs))
    print(f"data: {args.n:,} × {args.dim} float32 ({path.stat().st_size / 2**30:.2f} GiB memory-mapped) in "
          f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    steps = [("dedup (k=64, t=0.9, cells, nprobe=%d)" % args.nprobe, step_dedup,
              dict(path=str(path), pairs_path=str(pairs_path), k=64, threshold=0.9, nprobe=args.nprobe))]
    for backend, per in [("numpy", None), ("numpy", 256)] + ([("faiss", 256)] if faiss_available() and not args.no_faiss else []):
        sample = "all points" if per is None else f"{per} points/centroid"
        steps.append((f"k-means k={args.k} ({backend}, {sample}, {args.iters} iterations)", step_kmeans,
                      dict(path=str(path), k=args.k, iters=args.iters, backend=backend, per_centroid=per)))
    results = []
    for name, fn, kw in steps:
        if args.only and not any(o in name for o in args.only):
            continue
        r = _in_child(fn, **kw)
        r["load_after"] = os.getloadavg()[0]
        results.append((name, r))
        extra = {k: v for k, v in r.items() if k not in ("wall_s", "cpu_s", "peak_rss_gb", "tracemalloc_peak_gb")}
        print(f"{name}: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, peak RSS {r['peak_rss_gb']:.2f} GiB, "
              f"NumPy peak {r['tracemalloc_peak_gb']:.2f} GiB; {json.dumps(extra)}", flush=True)
    print("\n| step | wall (s) | CPU (s) | peak RSS (GiB) | NumPy peak (GiB) | result |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        if "recall" in r:
            what = f"planted-pair recall {r['recall']:.4f}, {r['groups']} groups, {r['false_groups']} false"
        else:
            what = f"inertia {r['inertia']:.4g}, {r['empty_clusters']} empty clusters"
        print(f"| {name} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_rss_gb']:.2f} | "
              f"{r['tracemalloc_peak_gb']:.2f} | {what} |")
    if not args.keep_data:
        path.unlink()
        pairs_path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("planted", help="near-duplicate recall / false groups on planted copies")
    p.add_argument("--weights", help="trained weights (any format dinolab.load_model reads)")
    p.add_argument("--random-init", action="store_true", help="use a random --arch model (pipeline check only)")
    p.add_argument("--arch", default="vit_small")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--generated", type=int, default=60, help="generated originals besides the photo tiles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to build the image folder (default: a new temporary folder)")
    p.add_argument("--verify", action="store_true", help="also print the table with pixel verification of the pairs")
    p.add_argument("--verify-min-score", type=float, default=0.75, help="NCC a verified pair reaches (default 0.75)")
    s = sub.add_parser("scale", help="dedup and k-means time / memory on synthetic embeddings")
    s.add_argument("--n", type=int, default=1_000_000)
    s.add_argument("--dim", type=int, default=384)
    s.add_argument("--concepts", type=int, default=1000)
    s.add_argument("--pairs", type=int, default=10_000)
    s.add_argument("--k", type=int, default=1000, help="k-means clusters")
    s.add_argument("--iters", type=int, default=10, help="k-means iterations")
    s.add_argument("--nprobe", type=int, default=2, help="cells searched per row by the dedup")
    s.add_argument("--no-faiss", action="store_true")
    s.add_argument("--only", nargs="*", help="run only the steps whose name contains one of these words")
    s.add_argument("--workdir", help="where to write the .npy (default: a new temporary folder)")
    s.add_argument("--keep-data", action="store_true", help="keep the .npy for another run")
    args = parser.parse_args()
    run_planted(args) if args.what == "planted" else run_scale(args)


if __name__ == "__main__":
    main()
