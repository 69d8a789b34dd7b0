"""Pixel verification speed against the number of intra-op CPU threads (issue 22 item 7).

Scores ``--pairs`` pairs of random 96 px pictures with :class:`dinolab.curate.verify.PixelVerifier`,
once with the verifier's own thread choice (one thread for the per-pair loop) and once forcing the
process-wide setting (``--threads``, default all cores) inside the loop, interleaved ``--repeats``
times. The gap is largest when the other cores are busy (each op's barrier waits for a time slice).

Example:
  python bench/bench_verify_threads.py --pairs 30 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dinolab.curate import verify  # noqa: E402


def _time(v: verify.PixelVerifier, paths: list[str], edges: np.ndarray) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    v.scores(paths, edges, progress=False)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(a.pairs + 1):
            paths.append(os.path.join(d, f"{i}.png"))
            Image.fromarray((rng.random((96, 96, 3)) * 255).astype("uint8")).save(paths[-1])
        edges = np.array([[i, i + 1] for i in range(a.pairs)])
        v = verify.PixelVerifier()
        torch.set_num_threads(a.threads)
        chosen = verify.cpu_threads
        rows = []
        for _ in range(a.repeats):
            verify.cpu_threads = chosen
            rows.append(("1 thread (default)", *_time(v, paths, edges)))
            verify.cpu_threads = lambda n: chosen(a.threads)  # what the loop did before
            rows.append((f"{a.threads} threads", *_time(v, paths, edges)))
        verify.cpu_threads = chosen
    print(f"{a.pairs} pairs, load average {os.getloadavg()[0]:.1f}")
    for name in dict.fromkeys(r[0] for r in rows):
        wall = [r[1] for r in rows if r[0] == name]
        cpu = [r[2] for r in rows if r[0] == name]
        print(f"  {name:<20} wall median {np.median(wall):6.2f} s   cpu median {np.median(cpu):6.2f} s")


if __name__ == "__main__":
    main()
