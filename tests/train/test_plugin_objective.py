"""A plugin objective with a YAML section of its own: the loader accepts, checks and saves the section, the
objective is built from it alone, and it trains next to the built-in terms."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from dinolab.errors import ConfigError
from dinolab.runtime.config_loader import bounded
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.config import Config, load_config
from dinolab.train.objectives import Objective, Objectives, register_objective, unregister_objective
from dinolab.train.trainer import Trainer


@dataclass
class CLSNormConfig:
    loss_weight: float = 0.0
    target: float = bounded(1.0, gt=0)


class CLSNorm(Objective):
    """(mean ||cls|| - target)^2 on the student's global-crop CLS tokens."""

    name = "cls_norm"
    uses_teacher = False

    def __init__(self, cfg: CLSNormConfig) -> None:
        super().__init__(cfg.loss_weight)
        self.target = cfg.target

    def forward(self, student, teacher, out, inputs):
        term = (out.student_global["cls"].norm(dim=-1).mean() - self.target) ** 2
        return term, {"cls_norm_loss": term.detach()}


@pytest.fixture
def plugin():
    register_objective("cls_norm", CLSNorm, section=CLSNormConfig)
    yield
    unregister_objective("cls_norm")


def test_the_section_is_merged_type_and_range_checked_and_saved(plugin, tmp_path):
    cfg = load_config("default", ["cls_norm.loss_weight=0.5", "cls_norm.target=2"])
    assert isinstance(cfg, Config) and cfg.cls_norm == CLSNormConfig(0.5, 2.0)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).section("cls_norm") == CLSNormConfig(0.5, 2.0)  # saved and read back
    with pytest.raises(ConfigError, match=r"cls_norm.target=0.0 must be a finite number > 0"):
        load_config("default", ["cls_norm.target=0"])
    with pytest.raises(ConfigError, match="did you mean cls_norm.target"):
        load_config("default", ["cls_norm.targt=2"])
    with pytest.raises(ConfigError, match="expected a number"):
        load_config("default", ["cls_norm.target=big"])


def test_without_the_plugin_the_section_is_an_unknown_key():
    with pytest.raises(ConfigError, match="unknown config key 'cls_norm.target'"):
        load_config("default", ["cls_norm.target=2"])


def test_the_objective_is_built_from_its_section_and_off_at_weight_zero(plugin):
    on = Objectives.from_config(load_config("default", ["cls_norm.loss_weight=0.5", "cls_norm.target=3"]))
    (term,) = [o for o in on if o.name == "cls_norm"]
    assert term.weight == 0.5 and term.target == 3.0
    assert [o.name for o in on][:-1] == [o.name for o in Objectives.from_config(load_config("default"))]
    assert "cls_norm" not in [o.name for o in Objectives.from_config(load_config("default"))]
    assert "cls_norm" not in [o.name for o in Objectives.from_config(Config())]  # built in code: the defaults


def test_a_plugin_term_trains_with_the_built_in_ones(plugin, tiny, tmp_path):
    result = Trainer(tiny("cls_norm.loss_weight=0.5", "train.epochs=1"), tmp_path / "run").fit()
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss" in r]
    assert rows and all(r["loss"] == pytest.approx(r["dino_loss"] + 0.5 * r["cls_norm_loss"], rel=1e-5)
                        for r in rows)
    assert "cls_norm:" in (result.run_dir / "config.yaml").read_text()
    assert torch.isfinite(torch.tensor([r["cls_norm_loss"] for r in rows])).all()
