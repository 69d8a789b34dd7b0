"""Time and memory of the training step against batch size and image size.

Same as `dinolab bench scaling`; takes its options (--quick, --device, --precisions, --out, ...).
Example: python bench/bench_scaling.py --quick
"""

from common import run

if __name__ == "__main__":
    run("scaling")
