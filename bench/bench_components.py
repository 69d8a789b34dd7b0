"""Connected components of near-duplicate edges: scipy ``connected_components`` vs the vectorised union-find
that dinolab.curate.dedup used before (kept here as the reference), on 1M synthetic edges.

    python bench/bench_components.py [--n 2000000] [--edges 1000000]

Two edge sets over N rows: uniformly random pairs (long chains merge), and near-duplicate-like pairs
(each edge joins a row to one of its next 3 rows). Prints the best of 3 wall times of each and checks
that both give the same component roots.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout, not an installed copy

from dinolab.curate.dedup import component_roots  # noqa: E402


def union_find_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The union-find of dinolab <= 675c469 (hook larger roots under the smallest, full path compression)."""
    parent = np.arange(n, dtype=np.int64)

    def find_all() -> np.ndarray:
        nonlocal parent
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                return parent
            parent = pp

    while len(a):
        roots = find_all()
        ra, rb = roots[a], roots[b]
        differ = ra != rb
        if not differ.any():
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
    return find_all()


def best_of(fn, *args, repeat: int = 3) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--edges", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a = rng.integers(0, args.n, args.edges)
    sets = {"random pairs": (a, rng.integers(0, args.n, args.edges)),
            "near-duplicate pairs": (a, np.minimum(a + rng.integers(1, 4, args.edges), args.n - 1))}
    for name, (x, y) in sets.items():
        t_uf, r_uf = best_of(union_find_roots, args.n, x, y)
        t_cc, r_cc = best_of(component_roots, args.n, x, y)
        print(f"{name}, {args.edges:,} edges over {args.n:,} rows: union-find {t_uf:.3f} s, "
              f"scipy connected_components {t_cc:.3f} s ({t_uf / t_cc:.2f}x), same roots: {np.array_equal(r_uf, r_cc)}")


if __name__ == "__main__":
    main()
