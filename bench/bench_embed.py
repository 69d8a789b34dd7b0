"""Embedding throughput of dinolab vs transformers' Dinov2Model (fp32 and bf16), with bf16 fidelity.

Same as `dinolab bench embed`; takes its options (--quick, --device, --precisions, --out, ...).
Example: python bench/bench_embed.py --quick
"""

from common import run

if __name__ == "__main__":
    run("embed")
