"""Relational distillation: the KL between softmax cosine neighbourhoods, its queue, its config and
its place in a distillation run (resume exact with the queue)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dinolab.errors import ConfigError
from dinolab.losses import relation_kl
from dinolab.models import create_model
from dinolab.models.weights import save_model
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.config import validate
from dinolab.train.objectives import Forward, Objectives, StepInputs
from dinolab.train.objectives.relation_distill import RelationDistillObjective
from dinolab.train.trainer import Trainer


def _reference(student, teacher, temp, s_anchors=(), t_anchors=()):
    """KL(P_t || P_s) per query by explicit loops in float64 (the other queries, then the anchors)."""
    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        return v / np.linalg.norm(v)

    total = 0.0
    for i in range(len(student)):
        sims_s = [unit(student[i]) @ unit(student[j]) for j in range(len(student)) if j != i]
        sims_t = [unit(teacher[i]) @ unit(teacher[j]) for j in range(len(teacher)) if j != i]
        sims_s += [unit(student[i]) @ unit(a) for a in s_anchors]
        sims_t += [unit(teacher[i]) @ unit(a) for a in t_anchors]
        ps = np.exp(np.array(sims_s) / temp) / np.exp(np.array(sims_s) / temp).sum()
        pt = np.exp(np.array(sims_t) / temp) / np.exp(np.array(sims_t) / temp).sum()
        total += float((pt * np.log(pt / ps)).sum())
    return total / len(student)


def test_relation_kl_matches_the_formula_with_different_widths():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 7, generator=g)
    for temp in (0.1, 0.5):
        assert float(relation_kl(s, t, temp)) == pytest.approx(_reference(s.numpy(), t.numpy(), temp), rel=1e-5)


def test_relation_kl_with_queue_anchors_matches_the_formula():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 6, generator=g)
    qs, qt = torch.randn(3, 3, generator=g), torch.randn(3, 6, generator=g)
    expected = _reference(s.numpy(), t.numpy(), 0.2, qs.numpy(), qt.numpy())
    assert float(relation_kl(s, t, 0.2, qs, qt)) == pytest.approx(expected, rel=1e-5)


def test_same_neighbourhoods_give_zero_and_a_shuffled_student_does_not():
    g = torch.Generator().manual_seed(2)
    t = torch.randn(6, 8, generator=g)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    assert float(relation_kl(3.0 * t @ rotation, t, 0.1)) < 1e-6  # cosines are invariant to scale and rotation
    assert float(relation_kl(t[torch.tensor([1, 0, 3, 2, 5, 4])], t, 0.1)) > 0.1


def test_gradient_reaches_the_student_only_and_is_finite_with_duplicates():
    t = torch.randn(4, 8).repeat(2, 1).requires_grad_()
    s = torch.randn(4, 5).repeat(2, 1).requires_grad_()  # every row twice: cosines of 1 between distinct rows
    loss = relation_kl(s, t, 0.05)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


def test_under_bf16_autocast_the_loss_is_computed_in_float32():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = relation_kl(s, t, 0.1)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(_reference(s.numpy(), t.numpy(), 0.1), rel=1e-5)


def _objective(tiny, teacher_file, queue: int) -> RelationDistillObjective:
    cfg = tiny(f"distill.teacher={teacher_file}", "distill.relation_loss_weight=1", f"distill.relation_queue={queue}")
    (objective,) = [o for o in Objectives.from_config(cfg) if o.name == "relation"]
    return objective


def _step(objective, s, t):
    out = Forward({"cls": s}, None, {"cls": t})
    inputs = StepInputs(torch.zeros(len(s), 3, 8, 8), None, batch=len(s) // 2, n_global=2, teacher_temp=0.1,
                        iteration=0)
    return objective(None, None, out, inputs)[0]


def test_the_queue_keeps_the_newest_committed_rows_and_feeds_the_loss(tiny, teacher_file):
    objective = _objective(tiny, teacher_file, queue=5)
    first_s, first_t = torch.randn(4, 3), torch.randn(4, 6)
    _step(objective, first_s, first_t)
    objective.discard()  # a skipped step leaves the queue alone
    assert objective.queue_student.numel() == 0
    _step(objective, first_s, first_t)
    objective.commit()
    s, t = torch.randn(4, 3), torch.randn(4, 6)
    expected = _reference(s.numpy(), t.numpy(), 0.1, first_s.numpy(), first_t.numpy())
    assert float(_step(objective, s, t)) == pytest.approx(expected, rel=1e-5)
    objective.commit()  # 4 new rows in front of the 4 old ones, cut to 5
    torch.testing.assert_close(objective.queue_student, torch.cat([s, first_s[:1]]))
    torch.testing.assert_close(objective.queue_teacher, torch.cat([t, first_t[:1]]))
    restored = _objective(tiny, teacher_file, queue=5)
    restored.load_state_dict(objective.state_dict())
    torch.testing.assert_close(restored.queue_teacher, objective.queue_teacher)


def test_the_term_needs_a_teacher_and_sane_values(tiny, teacher_file):
    with pytest.raises(ConfigError, match=r"distill.relation_loss_weight=1.0 needs a frozen teacher.*distill.teacher="):
        validate(tiny("distill.relation_loss_weight=1"))
    with pytest.raises(ConfigError, match=r"distill.relation_temp=0.0 must be > 0"):
        validate(tiny(f"distill.teacher={teacher_file}", "distill.relation_loss_weight=1", "distill.relation_temp=0"))
    assert not [o for o in Objectives.from_config(tiny(f"distill.teacher={teacher_file}")) if o.name == "relation"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(1)
    model = create_model("vit_tiny", patch_size=8, embed_dim=48, depth=3, num_heads=3, img_size=16)
    return save_model(model, tmp_path_factory.mktemp("teacher") / "big.safetensors")


def test_a_distillation_run_with_the_queue_resumes_exactly(tiny, teacher_file, tmp_path):
    cfg = (f"distill.teacher={teacher_file}", "model.drop_path_rate=0", "distill.relation_loss_weight=1",
           "distill.relation_queue=12", "train.epochs=2", "train.epoch_length=3")
    straight = Trainer(tiny(*cfg), tmp_path / "straight")
    straight.fit()
    first = Trainer(tiny(*cfg), tmp_path / "resumed")
    first.on_loss = lambda it, loss: (first.request_stop() if it == 3 else None) or loss
    first.fit()
    Trainer.from_run(tmp_path / "resumed").fit()
    runs = [{r["step"]: r["relation_loss"] for r in read_metrics(d / "metrics.jsonl") if "relation_loss" in r}
            for d in (tmp_path / "straight", tmp_path / "resumed")]
    assert sorted(runs[1]) == list(range(1, 7)) and len({round(v, 6) for v in runs[0].values()}) > 1
    for step, value in runs[0].items():
        assert runs[1][step] == pytest.approx(value, rel=1e-5, abs=1e-6), step
    (queue,) = [v for k, v in load_checkpoint(tmp_path / "resumed")["objectives"].items() if k.endswith("queue_teacher")]
    assert queue.shape == (12, 48)  # full (6 steps x 2 crops x 8 images > 12), the teacher's width
