"""Issue 22 item 9: values that the first step or the seeding would trip over are refused when the config loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dinolab.errors import ConfigError
from dinolab.train.config import Config, load_config, validate


@pytest.mark.parametrize("override, message", [
    ("optim.lr=inf", r"optim.lr=inf must be a finite number >= 0; e.g. optim.lr=0.0005"),
    ("optim.min_lr=inf", r"optim.min_lr=inf must be a finite number >= 0"),
    ("train.seed=-1", r"train.seed=-1 must be in \[0, 4294967295\]"),
    ("train.seed=99999999999", r"train.seed=99999999999 must be"),
    ("train.device=tpu", r"train.device=tpu is not a device; use auto, cpu, cuda, cuda:N or mps"),
])
def test_out_of_range_values_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("default", [override])


def test_validate_checks_the_declared_ranges_of_a_config_built_in_code():
    c = Config()
    c.data.source = "builtin:digits"
    c.optim.lr = float("inf")
    with pytest.raises(ConfigError, match="optim.lr=inf"):
        validate(c)


def test_the_command_reports_it_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dinolab", "train", "optim.lr=inf", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "optim.lr=inf must be a finite number" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # refused before the run directory was made
