"""Training-step throughput, peak memory and MFU for the DINO and DINOv2-style recipes, plus augmentation.

Same as `dinolab bench train`; takes its options (--quick, --device, --precisions, --out, ...).
Example: python bench/bench_train_step.py --quick
"""

from common import run

if __name__ == "__main__":
    run("train")
