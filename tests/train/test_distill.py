"""Distillation from a frozen teacher: config checks, the frozen teacher, the exported EMA student,
teacher heads read from files, the iBOT term on every token, crop sizes, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dinolab
from dinolab import cli
from dinolab.errors import ConfigError, DinolabError, WeightsError
from dinolab.models import DINOHead, create_model
from dinolab.models.weights import save_model
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.config import validate
from dinolab.train.objectives import Forward, StepInputs
from dinolab.train.teacher.frozen import ResizedInput
from dinolab.train.teacher.source import head_from_state, split_heads
from dinolab.train.trainer import Trainer

# the student: width 32, 2 blocks (conftest); the teacher: width 48, 3 blocks, 3 heads
STUDENT = ("model.drop_path_rate=0", "ibot.loss_weight=1", "ibot.mask_sample_probability=0", "koleo.loss_weight=0.1")


def _teacher_model(patch: int = 8):
    torch.manual_seed(1)
    return create_model("vit_tiny", patch_size=patch, embed_dim=48, depth=3, num_heads=3, img_size=16)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    return save_model(_teacher_model(), tmp_path_factory.mktemp("teacher") / "big.safetensors")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny):
    """A finished tiny run whose EMA teacher (backbone + dino_head + ibot_head) becomes the frozen teacher."""
    run = tmp_path_factory.mktemp("teacher_run")
    Trainer(tiny("train.epochs=1", "model.embed_dim=48", "model.num_heads=3", "ibot.loss_weight=1",
                 "ibot.separate_head=true", "ibot.mask_ratio_min_max=[0.25,0.5]"), run).fit()
    return run


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """A DINOv2-style training checkpoint: ``{"teacher": {backbone.*, dino_head.*}}`` (no iBOT head)."""
    torch.manual_seed(2)
    backbone = create_model("vit_tiny", patch_size=8, embed_dim=64, depth=2, num_heads=1, img_size=16)
    head = DINOHead(64, 64, hidden_dim=32, bottleneck_dim=16)
    teacher = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
               **{f"dino_head.{k}": v for k, v in head.state_dict().items()}}
    path = tmp_path_factory.mktemp("official") / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher, "iteration": 10}, path)
    return path, head


def _distill(tiny, teacher, *extra):
    return tiny(f"distill.teacher={teacher}", *STUDENT, *extra)


# ------------------------------------------------------------------------------------------------
# configuration


def test_a_preset_without_teacher_says_how_to_get_one(tiny):
    with pytest.raises(ConfigError, match=r"distill.teacher is required.*dinolab train dinov2_shapes --out"):
        validate(tiny("distill.teacher=???"))


def test_gram_anchoring_is_refused_with_distillation(tiny, teacher_file):
    with pytest.raises(ConfigError, match=r"gram.loss_weight=1.0.*set gram.loss_weight=0"):
        validate(_distill(tiny, teacher_file, "gram.loss_weight=1.0"))


def test_masking_and_drop_path_are_warned_about(tiny, teacher_file):
    warnings = validate(_distill(tiny, teacher_file, "model.drop_path_rate=0.1", "ibot.mask_sample_probability=0.5"))
    assert any("model.drop_path_rate=0.1" in w for w in warnings)
    assert any("ibot.mask_sample_probability=0.5" in w for w in warnings)
    assert not [w for w in validate(_distill(tiny, teacher_file)) if "distill" in w]


def test_wrong_heads_value_names_the_choices(tiny):
    with pytest.raises(ConfigError, match=r"distill.heads='fil'.*'file'"):
        tiny("distill.heads=fil")


def test_a_missing_teacher_file_names_the_key(tiny, tmp_path):
    with pytest.raises(WeightsError, match=r"distill.teacher=.*nope.safetensors"):
        Trainer(_distill(tiny, tmp_path / "nope.safetensors"), tmp_path / "run").setup()


def test_teacher_crop_size_must_fit_the_teacher_and_the_student_grid(tiny, teacher_file, tmp_path):
    with pytest.raises(ConfigError, match=r"distill.teacher_crops_size=12 is not a multiple of the teacher's patch"):
        Trainer(_distill(tiny, teacher_file, "distill.teacher_crops_size=12"), tmp_path / "a").setup()
    with pytest.raises(ConfigError, match=r"gives the teacher a 4x4 patch grid but the student has 2x2.*=16"):
        Trainer(_distill(tiny, teacher_file, "distill.teacher_crops_size=32"), tmp_path / "b").setup()


def test_prototype_counts_must_match_the_teachers_heads(tiny, teacher_run, tmp_path):
    with pytest.raises(ConfigError, match=r"teacher's dino_head has 64 prototypes.*set dino.out_dim=64"):
        Trainer(_distill(tiny, teacher_run, "ibot.separate_head=true", "dino.out_dim=32"), tmp_path).setup()


def test_heads_file_needs_heads_in_the_source(tiny, teacher_file, official_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"holds no head; set distill.heads=random"):
        Trainer(_distill(tiny, teacher_file, "distill.heads=file"), tmp_path / "a").setup()
    with pytest.raises(ConfigError, match=r"need the teacher's dino_head, ibot_head but the file holds dino_head.*"
                                          r"ibot.separate_head=false"):
        Trainer(_distill(tiny, official_checkpoint[0], "ibot.separate_head=true"), tmp_path / "b").setup()


def test_heads_of_an_official_training_checkpoint_are_used_frozen(tiny, official_checkpoint, tmp_path):
    path, head = official_checkpoint
    trainer = Trainer(_distill(tiny, path), tmp_path)
    trainer.setup()
    assert trainer.teacher_strategy.heads_origin == "file" and trainer.teacher["backbone"].embed_dim == 64
    x = torch.randn(3, 64)
    torch.testing.assert_close(trainer.teacher["dino_head"](x), head.eval()(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# teacher heads and sources


@pytest.mark.parametrize("kwargs", [dict(nlayers=3), dict(nlayers=2, use_bn=True), dict(nlayers=1),
                                    dict(nlayers=3, weight_norm=False)])
def test_a_head_is_rebuilt_from_its_tensors(kwargs):
    torch.manual_seed(0)
    head = DINOHead(24, 40, hidden_dim=20, bottleneck_dim=12, **kwargs)
    if kwargs.get("use_bn"):
        head.mlp[1].running_mean.normal_()
        head.mlp[1].running_var.uniform_(0.5, 2)
    head.eval()
    rebuilt = head_from_state(head.state_dict(), "test")
    x = torch.randn(5, 24)
    torch.testing.assert_close(rebuilt(x), head(x), rtol=0, atol=0)
    assert not any(p.requires_grad for p in rebuilt.parameters())


def test_heads_are_found_under_official_prefixes():
    t = torch.zeros(1)
    state = {"module.backbone.cls_token": t, "module.head.mlp.0.weight": t, "dino_head.last_layer.weight_v": t,
             "ibot_head.mlp.0.bias": t, "backbone.blocks.0.norm1.weight": t}
    heads = split_heads(state)
    assert sorted(heads) == ["dino_head", "ibot_head"]
    assert sorted(heads["dino_head"]) == ["last_layer.weight_v", "mlp.0.weight"]  # v1 "head." is the DINO head
    assert list(heads["ibot_head"]) == ["mlp.0.bias"]


def test_a_run_directory_gives_backbone_and_heads_of_its_checkpoint(tiny, teacher_run, tmp_path):
    trainer = Trainer(_distill(tiny, teacher_run, "ibot.separate_head=true"), tmp_path)
    trainer.setup()
    saved = load_checkpoint(teacher_run)["teacher"]
    assert trainer.teacher_strategy.heads_origin == "file"
    for name, tensor in trainer.teacher.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert set(trainer.teacher.state_dict()) == set(saved)


def test_backbone_only_sources_get_frozen_random_heads_independent_of_the_student_init(tiny, teacher_file, tmp_path):
    a = Trainer(_distill(tiny, teacher_file), tmp_path / "a")
    a.setup()
    assert a.teacher_strategy.heads_origin == "random"
    assert a.teacher["dino_head"].mlp[0].weight.shape == (32, 48)  # teacher width in, config widths
    b = Trainer(tiny(*STUDENT), tmp_path / "b")
    b.setup()  # the same seed without distillation: the student starts identical
    for name, tensor in b.student.state_dict().items():
        torch.testing.assert_close(a.student.state_dict()[name], tensor, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------
# training


def test_teacher_stays_bit_identical_and_the_exported_model_is_the_student_ema(tiny, teacher_run, tmp_path):
    trainer = Trainer(_distill(tiny, teacher_run, "ibot.separate_head=true", "train.epochs=1",
                               "teacher.momentum_teacher=0.9"), tmp_path)
    trainer.setup()
    teacher0 = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    assert not any(p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in trainer.teacher.parameters()}
    assert not optimized & {id(p) for p in trainer.teacher_strategy.student_ema.parameters()}

    batches = trainer.batches(0)
    it, micro = next(batches)
    ema0 = {k: v.clone() for k, v in trainer.teacher_strategy.student_ema.named_parameters()}
    record = trainer.train_step(it, micro)
    assert "skipped" not in record and record["ibot_masked_share"] == 1.0
    m = trainer.schedules.at(it)["momentum"]
    student = dict(trainer.student["backbone"].named_parameters())
    for name, p in trainer.teacher_strategy.student_ema.named_parameters():  # EMA: m * previous + (1 - m) * student
        torch.testing.assert_close(p, m * ema0[name] + (1 - m) * student[name], rtol=1e-6, atol=1e-7)
    result = trainer.fit()
    assert result.iterations == 3 and result.exported == tmp_path / "student_ema_backbone.safetensors"
    for name, tensor in trainer.teacher.state_dict().items():
        assert torch.equal(tensor, teacher0[name]), name
    exported = dinolab.load_model(result.exported)
    ema = trainer.teacher_strategy.student_ema.state_dict()
    for name, tensor in exported.state_dict().items():
        assert torch.equal(tensor, ema[name]), name
    raw = trainer.student["backbone"].state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in ema)  # the EMA, not the raw student
    assert exported.embed_dim == 32 and not (tmp_path / "teacher_backbone.safetensors").exists()
    state = load_checkpoint(tmp_path)
    assert state["teacher"] is None and not any(k.startswith("backbone") for k in state["distill"]["teacher_heads"])


def test_knn_evaluates_the_student_ema(tiny, teacher_file, tmp_path):
    trainer = Trainer(_distill(tiny, teacher_file, "train.epochs=1", "eval.knn_every=1", "eval.knn_k=[3]"), tmp_path)
    seen = []
    knn = trainer.knn
    trainer.knn = lambda backbone, **kw: seen.append(backbone) or knn(backbone, **kw)
    trainer.fit()
    assert seen and seen[0] is trainer.teacher_strategy.student_ema


def test_ibot_in_distillation_is_the_mean_cross_entropy_over_every_token(tiny, teacher_file):
    from dinolab.train.objectives import Objectives

    cfg = _distill(tiny, teacher_file, "dino.out_dim=6", "ibot.centering=softmax")
    ibot = next(o for o in Objectives.from_config(cfg) if o.name == "ibot")
    torch.manual_seed(0)
    s, t = torch.randn(4, 5, 6), torch.randn(4, 5, 6)  # (G*B, N, K): identity heads, K = D
    heads = nn.ModuleDict({"dino_head": nn.Identity()})
    inputs = StepInputs(torch.zeros(4, 3, 16, 16), None, batch=2, n_global=2, teacher_temp=0.05, iteration=0)
    ibot.prepare(inputs, torch.Generator().manual_seed(0))
    assert inputs.global_masks is None  # the student sees unmasked crops
    loss, _ = ibot(heads, heads, Forward({"patches": s}, None, {"patches": t}), inputs)
    expected = -(F.softmax(t / 0.05, -1) * F.log_softmax(s / 0.1, -1)).sum(-1).mean()  # center starts at 0
    torch.testing.assert_close(loss, expected)


def test_a_teacher_with_another_patch_size_sees_crops_on_the_students_grid(tiny, tmp_path):
    path = save_model(_teacher_model(patch=4), tmp_path / "p4.safetensors")
    trainer = Trainer(_distill(tiny, path, "train.epochs=1", "train.epoch_length=1"), tmp_path / "run")
    trainer.setup()
    wrapped = trainer.teacher["backbone"]
    assert isinstance(wrapped, ResizedInput) and wrapped.target_size(16, 16) == (8, 8)  # student 2x2 patches of 8
    out = wrapped.forward_features(torch.randn(2, 3, 16, 16))
    assert out["patches"].shape == (2, 4, 48)
    assert trainer.fit().iterations == 1


# ------------------------------------------------------------------------------------------------
# resume


CONFIG = ("train.epochs=2", "train.epoch_length=3", "train.accumulate=2")


def _stop_after(trainer: Trainer, k: int) -> None:
    trainer.on_loss = lambda it, loss: (trainer.request_stop() if it == k - 1 else None) or loss


def test_resume_is_exact_and_refuses_another_teacher(tiny, teacher_run, tmp_path):
    import shutil

    teacher_run = shutil.copytree(teacher_run, tmp_path / "teacher")  # changed below
    cfg = ("ibot.separate_head=true", *CONFIG)
    straight = Trainer(_distill(tiny, teacher_run, *cfg), tmp_path / "straight")
    assert straight.fit().iterations == 6
    first = Trainer(_distill(tiny, teacher_run, *cfg), tmp_path / "resumed")
    _stop_after(first, 4)
    assert first.fit().iterations == 4
    assert Trainer.from_run(tmp_path / "resumed").fit().iterations == 6
    losses = [{r["step"]: r["loss"] for r in read_metrics(d / "metrics.jsonl") if "loss" in r}
              for d in (tmp_path / "straight", tmp_path / "resumed")]
    assert sorted(losses[1]) == list(range(1, 7))
    for step, value in losses[0].items():
        assert losses[1][step] == pytest.approx(value, rel=1e-5, abs=1e-6), step
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for name, tensor in a["student"].items():
        torch.testing.assert_close(b["student"][name], tensor, rtol=1e-5, atol=1e-6)
    for name, tensor in a["distill"]["student_ema"].items():
        torch.testing.assert_close(b["distill"]["student_ema"][name], tensor, rtol=1e-5, atol=1e-6)

    # the teacher's files change (a run that went on training): resuming is refused, naming the teacher
    ckpt = teacher_run / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["teacher"]["backbone.norm.weight"] += 1.0
    torch.save(state, ckpt)
    with pytest.raises(DinolabError, match=r"is not the teacher .* was trained with.*SHA-256"):
        Trainer.from_run(tmp_path / "resumed", ["train.epochs=3"]).setup()


def test_a_distillation_checkpoint_is_not_resumed_without_its_teacher(tiny, teacher_file, tmp_path):
    first = Trainer(_distill(tiny, teacher_file, *CONFIG), tmp_path)
    _stop_after(first, 1)
    first.fit()
    with pytest.raises(DinolabError, match=r"from a distillation run but the config sets no distill.teacher"):
        Trainer.from_run(tmp_path, ["distill.teacher=null"]).setup()


# ------------------------------------------------------------------------------------------------
# presets, end to end through `dinolab train`

TINY = ["model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "data.source=builtin:shapes?n=24&size=32", "crops.global_crops_size=32", "crops.local_crops_size=16",
        "crops.local_crops_number=2", "dino.out_dim=64", "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16",
        "ibot.out_dim=64", "train.batch_size=8", "train.epoch_length=2", "train.epochs=1", "train.progress=false",
        "train.device=cpu", "train.precision=fp32", "optim.warmup_epochs=0", "teacher.warmup_teacher_temp_epochs=0",
        "eval.knn_every=-1"]


@pytest.mark.parametrize("preset", ["distill_shapes", "distill_vits14"])
def test_distill_preset_trains_end_to_end(preset, teacher_file, tmp_path, capsys):
    run = tmp_path / preset
    assert cli.main(["train", preset, *TINY, f"distill.teacher={teacher_file}", "--out", str(run)]) == 0
    assert "student backbone (EMA)" in capsys.readouterr().out
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "loss" in r]
    assert len(steps) == 2 and all("skipped" not in r for r in steps)
    assert {"dino_loss", "ibot_loss", "koleo_loss"} <= set(steps[0]) and steps[0]["ibot_masked_share"] == 1.0
    assert ("relation_loss" in steps[0]) == (preset == "distill_shapes")  # dinolab's term; the paper preset is pure
    assert dinolab.load_model(run / "student_ema_backbone.safetensors").embed_dim == 32


def test_distill_presets_follow_the_recipe():
    from dinolab.train.config import load_config

    for name in ("distill_shapes", "distill_vits14"):
        c = load_config(name)
        assert c.distill.teacher == "???" and c.model.drop_path_rate == 0 and c.ibot.mask_sample_probability == 0
    c = load_config("distill_vits14")
    assert (c.model.arch, c.model.patch_size, c.train.batch_size, c.train.epochs * c.train.epoch_length) == (
        "vit_small", 14, 2048, 625_000)
    assert c.optim.lr * (c.train.batch_size / 1024) ** 0.5 == pytest.approx(1e-3, rel=1e-3)  # Table 16
    assert (c.teacher.momentum_teacher, c.optim.weight_decay_end, c.optim.warmup_epochs * 1250) == (0.994, 0.2, 100_000)
