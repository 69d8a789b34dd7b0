"""iBOT and KoLeo wired into the objectives: masked tokens only, targets from the unmasked teacher,
per-image weighting over all global crops, KoLeo per global crop, total = weighted sum of the terms."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dinolab.train.objectives import Objectives, StepInputs
from dinolab.train.trainer import Trainer

B = 3


def _setup(cfg):
    torch.manual_seed(0)
    from dinolab.models import create_model

    objectives = Objectives.from_config(cfg)
    backbone = create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    student = nn.ModuleDict({"backbone": backbone, **objectives.make_heads(32)})
    teacher = copy.deepcopy(student).eval()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
        teacher["backbone"].mask_token.normal_()  # would change the targets if the teacher saw the masks
    g = torch.Generator().manual_seed(1)
    inputs = StepInputs(torch.randn(2 * B, 3, 16, 16, generator=g), torch.randn(2 * B, 3, 8, 8, generator=g),
                        batch=B, n_global=2, teacher_temp=0.05, iteration=0)
    masks = torch.zeros(2 * B, 4, dtype=torch.bool)
    masks[0, :3] = True  # image 0 of crop 0: 3 masked tokens
    masks[4, 1] = True  # image 1 of crop 1: 1 masked token; the 4 other crops are unmasked
    inputs.global_masks = masks
    return objectives, student, teacher, inputs


def _sinkhorn(logits, temp, iters=3):  # DINOv2's sinkhorn_knopp_teacher, written out
    q = torch.exp(logits / temp).t()
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


@pytest.mark.parametrize("separate,centering", [(True, "softmax"), (False, "sinkhorn_knopp")])
def test_ibot_term_by_hand(tiny, separate, centering):
    cfg = tiny("ibot.loss_weight=1.0", f"ibot.separate_head={str(separate).lower()}", f"ibot.centering={centering}")
    objectives, student, teacher, inputs = _setup(cfg)
    _, stats = objectives(student, teacher, inputs)
    head = "ibot_head" if separate else "dino_head"
    assert (head in student) and (("ibot_head" in student) == separate)

    masks = inputs.global_masks
    with torch.no_grad():
        t_patches = teacher["backbone"].forward_features(inputs.global_crops)["patches"]  # no masks
        s_patches = student["backbone"].forward_features(inputs.global_crops, masks)["patches"]
        total = 0.0
        t_logits = torch.stack([teacher[head](t_patches[i, n]) for i, n in masks.nonzero().tolist()])
        q = F.softmax(t_logits / 0.05, -1) if centering == "softmax" else _sinkhorn(t_logits, 0.05)
        row = 0
        for i in range(2 * B):
            idx = masks[i].nonzero().flatten().tolist()
            if not idx:
                continue  # unmasked crops count as 0 but stay in the denominator
            ce = [-(q[row + j] * F.log_softmax(student[head](s_patches[i, n]) / 0.1, -1)).sum()
                  for j, n in enumerate(idx)]
            total += sum(ce) / len(idx)
            row += len(idx)
        expected = total / (2 * B)
    assert stats["ibot_loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ibot_center_updates_after_commit_only(tiny):
    objectives, student, teacher, inputs = _setup(tiny("ibot.loss_weight=1.0", "ibot.separate_head=true"))
    ibot = next(o for o in objectives if o.name == "ibot")
    objectives(student, teacher, inputs)
    assert torch.count_nonzero(ibot.loss.center) == 0
    objectives.discard()
    objectives.commit()
    assert torch.count_nonzero(ibot.loss.center) == 0  # the discarded step left nothing behind
    objectives(student, teacher, inputs)
    objectives.commit()
    with torch.no_grad():
        t = teacher["backbone"].forward_features(inputs.global_crops)["patches"][inputs.global_masks]
        expected = 0.1 * teacher["ibot_head"](t).mean(0)  # 0.9 * 0 + 0.1 * mean of the masked-token logits
    torch.testing.assert_close(ibot.loss.center.flatten(), expected, rtol=1e-5, atol=1e-6)


def _koleo_by_hand(x):
    x = x / x.norm(dim=-1, keepdim=True)
    d = torch.cdist(x, x) + torch.diag(torch.full((len(x),), float("inf")))
    return -torch.log(d.min(dim=1).values).mean()


def test_koleo_term_and_total_is_the_weighted_sum(tiny):
    cfg = tiny("ibot.loss_weight=0.7", "koleo.loss_weight=0.1")
    objectives, student, teacher, inputs = _setup(cfg)
    assert [o.name for o in objectives] == ["dino", "ibot", "koleo"]
    loss, stats = objectives(student, teacher, inputs)
    with torch.no_grad():
        cls = student["backbone"].forward_features(inputs.global_crops, inputs.global_masks)["cls"]
    expected_koleo = _koleo_by_hand(cls[:B]) + _koleo_by_hand(cls[B:])  # each global crop, summed
    assert stats["koleo_loss"].item() == pytest.approx(expected_koleo.item(), rel=1e-5)
    combined = stats["dino_loss"] + 0.7 * stats["ibot_loss"] + 0.1 * stats["koleo_loss"]
    assert loss.item() == pytest.approx(combined.item(), rel=1e-6)
    assert stats["loss"].item() == pytest.approx(combined.item(), rel=1e-6)


def test_prepare_draws_half_of_the_global_crops_reproducibly(tiny):
    objectives = Objectives.from_config(tiny("ibot.loss_weight=1.0", "crops.global_crops_size=64"))
    ibot = next(o for o in objectives if o.name == "ibot")

    def draw(seed):
        inputs = StepInputs(torch.zeros(2 * 4, 3, 64, 64), None, batch=4, n_global=2, teacher_temp=0.05, iteration=0)
        ibot.prepare(inputs, torch.Generator().manual_seed(seed))
        return inputs.global_masks

    m = draw(3)
    assert m.shape == (8, 64) and int((m.sum(1) > 0).sum()) == 4
    assert torch.equal(m, draw(3))


def test_trainer_runs_dinov2_objectives_and_logs_every_term(tiny, tmp_path):
    cfg = tiny("ibot.loss_weight=1.0", "ibot.separate_head=true", "koleo.loss_weight=0.1", "train.epochs=1",
               "dino.centering=sinkhorn_knopp", "crops.global_crops_size=32", "data.source=builtin:shapes?n=40&size=32")
    result = Trainer(cfg, tmp_path / "run").fit()
    assert result.iterations == 3 and math.isfinite(result.loss)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    for r in steps:
        assert "skipped" not in r
        assert r["loss"] == pytest.approx(r["dino_loss"] + r["ibot_loss"] + 0.1 * r["koleo_loss"], rel=1e-5)
    assert any(r["ibot_loss"] > 0 for r in steps)
