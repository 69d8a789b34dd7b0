"""Crash and fault matrix of the commands that write a run directory (issue 21 item 3; RELIABILITY.md).

For each target (default: every one in :data:`dinolab.bench.faults.TARGETS`): an uninterrupted run,
then ``--kills`` kill -9 at random moments with a resume after each, SIGTERM, Ctrl-C, a full disk (tmpfs),
a read-only output folder, two processes on one run, a corrupted latest checkpoint. Prints one line per
cell and writes them as JSON. The mounts need root; elsewhere those cells say they did not run.

Example:
  python bench/bench_faults.py --kills 20 --out faults.json
  python bench/bench_faults.py --targets align --kills 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout

from dinolab.bench.faults import TARGETS, matrix  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    p.add_argument("--kills", type=int, default=20, help="kill -9 per target (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", default=None, help="folder for the runs (default: a new temporary one, kept)")
    p.add_argument("--out", default=None, help="write the outcomes as JSON")
    args = p.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="dinolab-faults-"))
    print(f"runs in {scratch}")
    outcomes = []
    for name in args.targets.split(","):
        t = time.perf_counter()
        for o in matrix(TARGETS[name], scratch / name, kills=args.kills, seed=args.seed):
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[o.passed]
            print(f"{mark} {o.target:8s} {o.attack:30s} {o.detail}", flush=True)
            outcomes.append(asdict(o))
        print(f"     {name}: {time.perf_counter() - t:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(outcomes, indent=1) + "\n")
    return 0 if all(o["passed"] is not False for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
