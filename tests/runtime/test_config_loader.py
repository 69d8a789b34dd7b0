"""The generic config loader: any dataclass tree, ranges declared with the fields, clear errors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import pytest

from dinolab.errors import ConfigError
from dinolab.runtime.config_loader import ConfigSchema, bounded, check_fields, device_name, to_yaml


@dataclass
class Opt:
    lr: float = bounded(0.1, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    ks: list[int] = bounded(default_factory=lambda: [10, 20], ge=1)
    kind: Literal["adamw", "sgd"] = "adamw"


@dataclass
class Run:
    seed: int = bounded(0, ge=0, le=2**32 - 1)
    device: str = bounded("auto", check=device_name)
    out: str | None = None


@dataclass
class Root:
    opt: Opt = field(default_factory=Opt)
    run: Run = field(default_factory=Run)


SCHEMA = ConfigSchema(Root, command="dinolab demo")


def test_yaml_file_then_overrides_with_coercion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("opt:\n  lr: 1e-3\n  betas: [0.5, 0.6]\nrun:\n  seed: 4\n")
    c = SCHEMA.load(path, ["opt.lr=2", "run.out=x", "opt.kind=sgd"])
    assert c.opt.lr == 2.0 and isinstance(c.opt.lr, float)  # int 2 -> float
    assert c.opt.betas == (0.5, 0.6) and c.run.seed == 4 and c.run.out == "x" and c.opt.kind == "sgd"
    assert SCHEMA.from_dict(SCHEMA.read_yaml(path)[0]).opt.lr == 1e-3  # "1e-3" (YAML 1.1 string) -> float


def test_dump_reads_back_identically(tmp_path):
    c = SCHEMA.load(None, ["opt.lr=0.25", "run.device=cuda:1"])
    path = tmp_path / "dump.yaml"
    path.write_text(to_yaml(c))
    assert SCHEMA.load(path) == c


def test_unknown_key_names_the_closest_and_the_command():
    with pytest.raises(ConfigError, match=r"'opt.lrr'.*did you mean opt.lr\?"):
        SCHEMA.load(None, ["opt.lrr=1"])
    with pytest.raises(ConfigError, match=r"'run.seeed'.*did you mean run.seed\?"):
        SCHEMA.load(None, ["run.seeed=1"])
    with pytest.raises(ConfigError, match=r"`dinolab demo --print-config` lists every key"):
        SCHEMA.load(None, ["zzzz.qqqq=1"])


def test_wrong_type_names_the_type_and_the_closest_choice():
    with pytest.raises(ConfigError, match=r"opt.kind='sdg' \(command line\) has the wrong type.*did you mean 'sgd'"):
        SCHEMA.load(None, ["opt.kind=sdg"])
    with pytest.raises(ConfigError, match=r"expected a list of 2 numbers"):
        SCHEMA.load(None, ["opt.betas=[1, 2, 3]"])


@pytest.mark.parametrize("override, message", [
    ("opt.lr=inf", r"opt.lr=inf must be a finite number > 0; e.g. opt.lr=0.1 \(the default\)"),
    ("opt.lr=.nan", r"opt.lr=nan must be a finite number > 0"),
    ("opt.lr=0", r"opt.lr=0.0 must be a finite number > 0"),
    ("opt.ks=[3, 0]", r"opt.ks=\[3, 0\] must be at least 1"),
    ("run.seed=-1", r"run.seed=-1 must be in \[0, 4294967295\]; e.g. run.seed=0 \(the default\)"),
    ("run.seed=99999999999", r"run.seed=99999999999 must be"),
    ("run.device=tpu", r"run.device=tpu is not a device; use auto, cpu, cuda, cuda:N or mps"),
    ("run.device=cuda:x", r"is not a device"),
])
def test_declared_ranges_refuse_bad_values_naming_key_value_and_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        SCHEMA.load(None, [override])


def test_ranges_are_checked_on_configs_built_in_code_and_none_passes():
    c = Root()
    c.run.out = None
    check_fields(c)  # defaults are valid
    c.opt.lr = -math.inf
    with pytest.raises(ConfigError, match="opt.lr=-inf"):
        check_fields(c)


@pytest.mark.parametrize("good", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_names_accepted(good):
    assert device_name(good) is None


def test_binary_or_missing_yaml_is_a_clear_error(tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\x80\x04\x95\xff\x00garbage\xfe")
    with pytest.raises(ConfigError, match=r"config.yaml is not a text YAML file"):
        SCHEMA.load(binary)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"dir.yaml is not a file"):
        SCHEMA.load(folder)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"must be a mapping of sections"):
        SCHEMA.load(tmp_path / "list.yaml")
