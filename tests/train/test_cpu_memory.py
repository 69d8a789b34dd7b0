import platform
import subprocess
import sys

import pytest

from dinolab.train.config import TrainConfig

# Allocates, touches and frees a 256 MiB tensor seven times; prints the minor page faults of the last four
# (the first ones may still grow the heap, as small allocations in between split the freed block).
PROBE = """
import resource, sys, torch
import dinolab.train  # as in training: the trainer's modules are loaded before the settings apply (with only
# dinolab.runtime loaded, the heap's layout made the freed block unreusable in about half the runs)
if sys.argv[1] == "keep":
    from dinolab.runtime.cpu_memory import keep_freed_memory
    assert keep_freed_memory()
def step():
    torch.ones(64 * 2**20)  # 256 MiB of float32, written then freed
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_kept_memory_is_reused_without_page_faults():
    # a 256 MiB block is 65,536 pages of 4 KiB: by default every new block faults them all in again
    assert _faults("default") > 4 * 60_000
    assert _faults("keep") < 4 * 2_000


def test_on_by_default_and_off_by_config():
    assert TrainConfig().keep_freed_memory is True
    assert TrainConfig(keep_freed_memory=False).keep_freed_memory is False
