"""The objective layer: the DINO term against the loss written out by hand, deferred centering,
and a new objective dropping in as configuration (no trainer change)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dinolab.train import objectives as obj
from dinolab.train.objectives import Objective, Objectives, StepInputs


def _models(cfg, objectives):
    torch.manual_seed(0)
    from dinolab.models import create_model

    backbone = create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    student = nn.ModuleDict({"backbone": backbone, **objectives.make_heads(32)})
    teacher = copy.deepcopy(student).eval()
    with torch.no_grad():  # make the teacher differ from the student
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return student, teacher


def _inputs(b=3, n_local=2, temp=0.05):
    g = torch.Generator().manual_seed(1)
    return StepInputs(torch.randn(2 * b, 3, 16, 16, generator=g), torch.randn(n_local * b, 3, 8, 8, generator=g),
                      batch=b, n_global=2, teacher_temp=temp, iteration=0)


def test_dino_term_matches_the_official_pair_loop(tiny):
    cfg = tiny()
    objectives = Objectives.from_config(cfg)
    student, teacher = _models(cfg, objectives)
    inputs = _inputs()
    loss, stats = objectives(student, teacher, inputs)

    tau_s, tau_t = 0.1, 0.05
    with torch.no_grad():
        t_logits = teacher["dino_head"](teacher["backbone"](inputs.global_crops))
        q = F.softmax((t_logits - 0) / tau_t, dim=-1).chunk(2)  # center starts at zero
    s_cls = torch.cat([student["backbone"](inputs.global_crops), student["backbone"](inputs.local_crops)])
    s = (student["dino_head"](s_cls) / tau_s).chunk(4)
    expected, n = 0.0, 0
    for iq, qq in enumerate(q):
        for v in range(4):
            if v == iq:
                continue
            expected = expected + torch.sum(-qq * F.log_softmax(s[v], dim=-1), dim=-1).mean()
            n += 1
    assert n == 6
    assert loss.item() == pytest.approx((expected / n).item(), rel=1e-5)
    assert stats["dino_loss"].item() == pytest.approx(loss.item())
    entropy = -(torch.cat(q) * torch.log(torch.cat(q))).sum(-1).mean()
    assert stats["teacher_entropy"].item() == pytest.approx(entropy.item(), rel=1e-4)


def test_center_moves_only_on_commit(tiny):
    objectives = Objectives.from_config(tiny())
    student, teacher = _models(tiny(), objectives)
    center = objectives[0].loss.center
    inputs = _inputs()
    objectives(student, teacher, inputs)
    objectives.discard()  # a skipped step
    assert torch.count_nonzero(center) == 0
    objectives(student, teacher, inputs)
    objectives.commit()
    with torch.no_grad():
        t_logits = teacher["dino_head"](teacher["backbone"](inputs.global_crops))
    assert torch.allclose(center, 0.1 * t_logits.mean(0, keepdim=True), atol=1e-6)  # 0.9·0 + 0.1·mean


class MeanCLSNorm(Objective):
    """A toy extra term: mean L2 norm of the student's global CLS tokens, through its own head."""

    name = "toy"
    uses_teacher = False

    def make_heads(self, embed_dim):
        return {"toy_head": nn.Linear(embed_dim, 4)}

    def forward(self, student, teacher, out, inputs):
        term = student["toy_head"](out.student_global["cls"]).norm(dim=-1).mean()
        return term, {"toy": term.detach()}


def test_a_new_objective_drops_in_through_the_registry(tiny, monkeypatch):
    monkeypatch.setitem(obj.OBJECTIVES, "toy", lambda c: MeanCLSNorm(weight=0.5))
    objectives = Objectives.from_config(tiny())
    assert [o.name for o in objectives] == ["dino", "toy"]
    student, teacher = _models(tiny(), objectives)
    assert "toy_head" in student and "toy_head" in teacher
    loss, stats = objectives(student, teacher, _inputs())
    assert loss.item() == pytest.approx(stats["dino_loss"].item() + 0.5 * stats["toy"].item(), rel=1e-6)
    loss.backward()
    assert student["toy_head"].weight.grad is not None
