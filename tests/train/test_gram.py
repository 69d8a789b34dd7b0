"""Gram anchoring as an objective: zero for an identical teacher, a hand-computed value through the
objective (2x Gram-teacher crops, bicubic downsampling), the weight ramp and the refresh schedule, the
Gram teacher saved with the checkpoint (exact resume), and the heads/config pieces of DINOv3."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dinolab.errors import ConfigError
from dinolab.models import create_model
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.config import validate
from dinolab.train.objectives import Objectives, StepInputs
from dinolab.train.objectives.gram_anchoring import GramSchedule
from dinolab.train.trainer import Trainer

B = 2


def _models(cfg, perturb_teacher: bool):
    torch.manual_seed(0)
    objectives = Objectives.from_config(cfg)
    backbone = create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    student = nn.ModuleDict({"backbone": backbone, **objectives.make_heads(32)})
    teacher = copy.deepcopy(student).eval()
    if perturb_teacher:
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(0.3 * torch.randn_like(p))
    objectives.setup(student, teacher, iters_per_epoch=10)
    return objectives, student, teacher


def _inputs(gram_size: int | None = None):
    g = torch.Generator().manual_seed(1)
    inputs = StepInputs(torch.randn(2 * B, 3, 16, 16, generator=g), None, batch=B, n_global=2, teacher_temp=0.05,
                        iteration=0)
    if gram_size:
        inputs.gram_crops = torch.randn(2 * B, 3, gram_size, gram_size, generator=g)
    return inputs


def _gram(x):  # (B, P, D) -> (B, P, P), every entry written out as a cosine similarity
    n = x / x.norm(dim=-1, keepdim=True)
    return torch.einsum("bpd,bqd->bpq", n, n)


def test_zero_loss_when_the_gram_teacher_is_the_student(tiny):
    cfg = tiny("gram.loss_weight=1.0", "model.drop_path_rate=0")
    objectives, student, teacher = _models(cfg, perturb_teacher=False)
    assert [o.name for o in objectives] == ["dino", "gram"]
    _, stats = objectives(student, teacher, _inputs())
    assert abs(float(stats["gram_loss"])) < 1e-10


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 taps around a point at fraction ``t`` (PyTorch's a = -0.75)."""
    def k(x):
        x = abs(x)
        return (a + 2) * x**3 - (a + 3) * x**2 + 1 if x <= 1 else a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return [k(1 + t), k(t), k(1 - t), k(2 - t)]


def _downsample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) bicubic resampling, half-pixel centres, border taps clamped (align_corners=False)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        base = math.floor(src)
        for tap, w in zip(range(base - 1, base + 3), _cubic_weights(src - base)):
            m[i, min(max(tap, 0), n_in - 1)] += w
    return m


def test_gram_term_by_hand_with_2x_teacher_crops(tiny):
    cfg = tiny("gram.loss_weight=2.0", "gram.img_size=32", "model.drop_path_rate=0")
    objectives, student, teacher = _models(cfg, perturb_teacher=True)
    inputs = _inputs(gram_size=32)
    total, stats = objectives(student, teacher, inputs)

    with torch.no_grad():
        s = student["backbone"].forward_features(inputs.global_crops)["patches"].double()  # (4, 2·2, 32)
        t = teacher["backbone"].forward_features(inputs.gram_crops)["patches"].double()  # (4, 4·4, 32)
    m = _downsample_matrix(4, 2)  # the teacher's 4x4 map onto the student's 2x2 grid
    t_map = t.reshape(2 * B, 4, 4, 32)
    t_small = torch.einsum("ih,bhwd,jw->bijd", m, t_map, m).reshape(2 * B, 4, 32)
    expected = ((_gram(s) - _gram(t_small)) ** 2).mean()
    assert float(stats["gram_loss"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(total.detach()) == pytest.approx(float(stats["dino_loss"]) + 2.0 * float(expected), rel=1e-5)


def test_weight_is_zero_before_the_start_and_the_teacher_is_not_run(tiny):
    cfg = tiny("gram.loss_weight=2.0", "gram.start_iteration=5")
    objectives, student, teacher = _models(cfg, perturb_teacher=True)
    gram = objectives[1]
    gram.gram_teacher.forward_features = None  # would raise if called
    _, stats = objectives(student, teacher, _inputs())
    assert "gram_loss" not in stats and gram.weight == 0.0


def test_weight_ramp_and_refresh_schedule_by_hand():
    s = GramSchedule(weight=2.0, start=1000, warmup=1000, snapshot=200, refresh_every=10, first_refresh=1010,
                     max_refreshes=3)
    assert s.weight_at(999) == 0.0 and s.weight_at(1000) == 0.0
    assert s.weight_at(1500) == pytest.approx(1.0)  # 2·(1 - cos(π/2))/2
    assert s.weight_at(1250) == pytest.approx(2.0 * (1 - math.cos(math.pi / 4)) / 2)
    assert s.weight_at(2000) == s.weight_at(10**6) == 2.0
    assert [n for n in range(1, 5000) if s.copies_after(n)] == [200, 1010, 1020, 1030]
    unlimited = GramSchedule(1.0, 3, 0, 3, 4, 7, None)  # first refresh at 7: the multiples of 4 from there on
    assert [n for n in range(1, 25) if unlimited.copies_after(n)] == [3, 8, 12, 16, 20, 24]


def test_refresh_copies_the_ema_teacher_exactly_at_the_scheduled_steps(tiny):
    cfg = tiny("gram.loss_weight=1.0", "gram.start_iteration=3", "gram.refresh_every=4", "gram.max_refreshes=2")
    objectives, student, teacher = _models(cfg, perturb_teacher=False)
    gram = objectives[1]
    copied = []
    for it in range(16):
        with torch.no_grad():  # the EMA teacher moves every step
            for p in teacher.parameters():
                p.add_(0.01)
        objectives.end_iteration(it, student, teacher)
        same = all(torch.equal(a, b) for a, b in zip(gram.gram_teacher.state_dict().values(),
                                                     teacher["backbone"].state_dict().values()))
        if same:
            copied.append(it + 1)
    assert copied == [3, 8, 12]  # snapshot at the start, then n >= 7 with n % 4 == 0, twice


def test_gram_teacher_from_a_weights_file(tiny, tmp_path):
    from dinolab.models import save_model

    other = create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=48, depth=1, num_heads=2)
    path = save_model(other, tmp_path / "gram_teacher")
    objectives, student, teacher = _models(tiny("gram.loss_weight=1.0", f"gram.teacher={path}"), False)
    gram_teacher = objectives[1].gram_teacher
    assert gram_teacher.embed_dim == 48 and not any(p.requires_grad for p in gram_teacher.parameters())
    _, stats = objectives(student, teacher, _inputs())  # another width (D' = 48) is fine for a Gram matrix
    assert float(stats["gram_loss"]) > 0
    with pytest.raises(ConfigError, match="gram.refresh_every=0"):
        _models(tiny("gram.loss_weight=1.0", f"gram.teacher={path}", "gram.refresh_every=5"), False)


# ------------------------------------------------------------------------------------------------
# through the trainer

CONFIG = ("train.epochs=2", "train.epoch_length=3", "gram.loss_weight=2.0", "gram.start_iteration=2",
          "gram.img_size=32", "gram.refresh_every=2", "gram.max_refreshes=1", "ibot.loss_weight=1.0",
          "ibot.mask_ratio_min_max=[0.25, 0.5]")


def test_trainer_refreshes_at_the_configured_steps(tiny, tmp_path):
    trainer = Trainer(tiny(*CONFIG), tmp_path)
    trainer.setup()
    gram, original = trainer.objectives[-1], trainer.objectives.end_iteration
    copied = []

    def end_iteration(it, student, teacher):
        original(it, student, teacher)
        if all(torch.equal(a, b) for a, b in zip(gram.gram_teacher.state_dict().values(),
                                                 teacher["backbone"].state_dict().values())):
            copied.append(it + 1)

    trainer.objectives.end_iteration = end_iteration
    trainer.fit()
    assert copied == [2, 4]  # the snapshot when the term starts, one refresh 2 steps later
    steps = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert ["gram_loss" in r for r in steps] == [False, False, True, True, True, True]


def test_resume_with_gram_continues_the_same_trajectory(tiny, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny(*CONFIG), straight).fit()
    run = tmp_path / "resumed"
    first = Trainer(tiny(*CONFIG), run)
    first.on_loss = lambda it, loss: (first.request_stop() if it == 2 else None) or loss
    assert first.fit().iterations == 3  # stopped between the snapshot (2) and the refresh (4)
    assert any("gram_teacher" in k for k in load_checkpoint(run)["objectives"])
    assert Trainer.from_run(run).fit().iterations == 6

    def losses(d):
        return {r["step"]: (r["loss"], r.get("gram_loss")) for r in read_metrics(d / "metrics.jsonl") if "loss" in r}

    expected, got = losses(straight), losses(run)
    assert sorted(got) == list(range(1, 7))
    for step, (loss, gram_loss) in expected.items():
        assert got[step][0] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
        assert (got[step][1] is None) == (gram_loss is None)
        if gram_loss is not None:
            assert got[step][1] == pytest.approx(gram_loss, rel=1e-5, abs=1e-7), step
    a, b = load_checkpoint(straight)["objectives"], load_checkpoint(run)["objectives"]
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# heads, config


def test_plain_heads_have_the_official_dinov3_keys(tiny):
    cfg = tiny("dino.head_weight_norm=false", "ibot.loss_weight=1.0", "ibot.separate_head=true")
    heads = Objectives.from_config(cfg).make_heads(32)
    official = {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
                "last_layer.weight"}
    for name in ("dino_head", "ibot_head"):
        keys = set(heads[name].state_dict())
        assert keys == official and not any("weight_g" in k or "weight_v" in k for k in keys)
        assert isinstance(heads[name].last_layer, nn.Linear) and heads[name].last_layer.bias is None


@pytest.mark.parametrize("overrides,match", [
    (["gram.img_size=20"], "gram.img_size=20 is not a multiple"),
    (["gram.start_iteration=5", "gram.snapshot_iteration=9"], "snapshot_iteration=9 is after"),
    (["gram.teacher=x.safetensors", "gram.snapshot_iteration=0"], "set only one"),
    (["gram.remove_neg=true", "gram.remove_only_teacher_neg=true"], "exclusive"),
    (["crops.options={gram_size: 32}"], "has its own key"),
])
def test_gram_config_errors_name_the_key(tiny, overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(tiny("gram.loss_weight=1.0", *overrides))


def test_constant_lr_after_warmup(tiny):
    from dinolab.train.schedules import Schedules

    s = Schedules.from_config(tiny("optim.lr_schedule=constant", "optim.lr=0.001", "optim.warmup_epochs=1"), 3)
    peak = 0.001 * 8 / 256
    assert [s.lr(i) for i in range(3)] == pytest.approx([0.0, peak / 2, peak])
    assert s.lr(4) == s.lr(5) == s.lr(100) == pytest.approx(peak)
    cosine = Schedules.from_config(tiny("optim.lr=0.001", "optim.warmup_epochs=1"), 3)
    assert cosine.lr(5) < peak
