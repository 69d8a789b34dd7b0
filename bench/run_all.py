"""Every benchmark in turn; add --out results.json to keep the figures.

Same as `dinolab bench all`; takes its options (--quick, --device, --precisions, --out, ...).
Example: python bench/run_all.py --quick
"""

from common import run

if __name__ == "__main__":
    run("all")
