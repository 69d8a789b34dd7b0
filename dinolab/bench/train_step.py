"""Training-step benchmark: one DINO iteration of the real :class:`~dinolab.train.Trainer`.

The step timed is ``Trainer.train_step`` itself (schedules, autocast, student on all crops in one
forward per crop size, teacher on the global crops, heads, losses, backward, clipping, AdamW,
EMA), with the multi-crop augmentation replaced by crops made once beforehand, so that the figure
is the model's and the augmentation is measured on its own (:mod:`dinolab.bench.augment`).

Recipes (ViT-S/16, 2 global crops + N local crops):

- ``dino``: the DINO v1 preset ``dino_vits16`` (65536 prototypes, softmax centering, per-tensor clip).
- ``dinov2``: the same backbone with DINOv2's choices: LayerScale 1e-5, Sinkhorn-Knopp centering,
  untied prototype gain, layer-wise lr decay 0.9, patch-embed lr x0.2, global clipping, plus the
  iBOT and KoLeo terms when this trainer offers them (``objectives`` in the result says which ran).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..errors import ConfigError

RECIPES: dict[str, list[str]] = {
    "dino": [],
    "dinov2": ["model.options={layerscale_init: 1.0e-5}", "dino.centering=sinkhorn_knopp",
               "dino.norm_last_layer=false", "optim.layerwise_decay=0.9", "optim.patch_embed_lr_mult=0.2",
               "optim.clip_mode=global"],
}
# DINOv2 terms added to the dinov2 recipe when the trainer accepts them
OPTIONAL_TERMS: dict[str, list[str]] = {"dinov2": ["ibot.loss_weight=1.0", "koleo.loss_weight=0.1"]}


@dataclass(frozen=True)
class StepSize:
    """The shape of a benchmarked step: images per step, crop sizes and counts, model overrides."""

    batch: int
    global_size: int = 224
    local_size: int = 96
    n_local: int = 8
    depth: int | None = None  # None: the preset's (12 for ViT-S)
    out_dim: int | None = None  # None: the preset's (65536)
    label: str = "full"

    @property
    def crops(self) -> str:
        return f"2x{self.global_size}+{self.n_local}x{self.local_size}"


FULL = StepSize(batch=16)
QUICK = StepSize(batch=2, global_size=64, local_size=32, n_local=2, depth=2, out_dim=4096, label="quick")


def config_overrides(recipe: str, size: StepSize, device: str, precision: str, extra: list[str] = ()) -> list[str]:
    if recipe not in RECIPES:
        raise ConfigError(f"unknown training recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    o = [f"train.batch_size={size.batch}", f"crops.global_crops_size={size.global_size}",
         f"crops.local_crops_size={size.local_size}", f"crops.local_crops_number={size.n_local}",
         f"train.device={device}", f"train.precision={precision}", "train.progress=false",
         "data.source=builtin:digits", "data.num_workers=0", "optim.freeze_last_layer_epochs=0",
         "optim.warmup_epochs=0", "eval.knn_every=-1"]
    if size.depth is not None:
        o.append(f"model.depth={size.depth}")
    if size.out_dim is not None:
        o.append(f"dino.out_dim={size.out_dim}")
    return o + RECIPES[recipe] + list(extra)


def build_trainer(recipe: str, size: StepSize, device: str, precision: str, run_dir: str | Path):
    """A set-up :class:`Trainer` for ``recipe`` at ``size`` (run files go to ``run_dir``).

    Returns ``(trainer, objectives)``: the names of the loss terms that are on.
    """
    from ..train.config import load_config
    from ..train.trainer import Trainer

    base = config_overrides(recipe, size, device, precision)
    config = None
    for extra in (OPTIONAL_TERMS.get(recipe, []), []):
        try:
            config = load_config("dino_vits16", base + extra)
            trainer = Trainer(config, run_dir, force=True)
            break
        except ConfigError:
            if not extra:
                raise
    trainer.setup()
    return trainer, [o.name for o in trainer.objectives]


def fixed_crops(size: StepSize, device: torch.device, seed: int = 0) -> SimpleNamespace:
    """Normalised-looking random crops in MultiCrop's layout (crop-major)."""
    g = torch.Generator().manual_seed(seed)
    glob = torch.randn(2 * size.batch, 3, size.global_size, size.global_size, generator=g)
    loc = torch.randn(size.n_local * size.batch, 3, size.local_size, size.local_size, generator=g)
    return SimpleNamespace(global_crops=glob.to(device), local_crops=loc.to(device), gram_crops=None)


class _FixedCrops:
    """Stands in for the trainer's MultiCrop: returns the same crops whatever the images."""

    def __init__(self, crops: SimpleNamespace, original: Any) -> None:
        self.crops, self.original = crops, original

    def __call__(self, images, sizes, generator, *keys):  # keys: positions, batch total (unused)
        return self.crops


def step_workload(trainer, size: StepSize, seed: int = 0):
    """``fn()`` running one ``trainer.train_step`` on fixed crops of ``size``; returns ``(fn, multicrop)``.

    The trainer's own multi-crop is returned so that it can be benchmarked on its own. Several
    workloads may share one trainer (e.g. different batch sizes): each installs its crops per call.
    """
    multicrop = getattr(trainer.multicrop, "original", trainer.multicrop)
    stub = _FixedCrops(fixed_crops(size, trainer.device, seed), multicrop)
    batch = {"images": torch.zeros(size.batch, 3, 1, 1, dtype=torch.uint8), "sizes": torch.ones(size.batch, 2).long(),
             "labels": torch.full((size.batch,), -1), "indices": torch.arange(size.batch), "bad": [],
             "positions": torch.arange(size.batch)}
    it = {"i": 0}

    def fn() -> dict[str, Any]:
        trainer.multicrop = stub
        record = trainer.train_step(it["i"], [batch])
        it["i"] += 1
        if "skipped" in record:
            raise RuntimeError(f"benchmark step was skipped: {record['skipped']}")
        return record

    return fn, multicrop


def _ibot(trainer):
    """The run's iBOT objective, or None."""
    return next((o for o in trainer.objectives if o.name == "ibot"), None)


def expected_masked_tokens(trainer, size: StepSize) -> float:
    """Mean number of masked patch tokens per step under the run's iBOT masking (0 without iBOT).

    A share ``mask_sample_probability`` of the global crops is masked, at ratios stratified uniformly
    over ``mask_ratio_min_max`` (mean: their midpoint).
    """
    if _ibot(trainer) is None:
        return 0.0
    i, backbone = trainer.config.ibot, trainer.student["backbone"]
    patches = (size.global_size // backbone.patch_size) ** 2
    return 2 * size.batch * patches * i.mask_sample_probability * sum(i.mask_ratio_min_max) / 2


def step_flops(trainer, size: StepSize) -> float:
    """Analytic FLOPs of one step: backbones, the DINO head on every CLS and the iBOT head on masked tokens."""
    from .flops import dino_step_flops, head_flops_per_row

    head = trainer.student["dino_head"]
    ibot = _ibot(trainer)
    patch_head = trainer.student[ibot.head_name] if ibot is not None else head
    return dino_step_flops(trainer.student["backbone"].config, batch=size.batch, global_size=size.global_size,
                           local_size=size.local_size, n_local=size.n_local,
                           head_row_flops=head_flops_per_row(head), patch_rows=expected_masked_tokens(trainer, size),
                           patch_head_row_flops=head_flops_per_row(patch_head))["total"]


def state_bytes(trainer) -> int:
    """Bytes of parameters, gradients and AdamW moments of the student plus the teacher's parameters."""
    s = sum(p.numel() * p.element_size() for p in trainer.student.parameters())
    trainable = sum(p.numel() * p.element_size() for p in trainer.student.parameters() if p.requires_grad)
    t = sum(p.numel() * p.element_size() for p in trainer.teacher.parameters())
    return s + 3 * trainable + t


def case_info(size: StepSize) -> dict[str, Any]:
    return {**asdict(size), "crops": size.crops}


def run(recipes: tuple[str, ...] = ("dino", "dinov2"), *, size: StepSize = FULL, fallback: StepSize | None = QUICK,
        device: str = "auto", precisions: tuple[str, ...] = ("fp32", "bf16"), repeats: int = 3, warmup: int = 1,
        budget_s: float = 120.0, augment: bool = True) -> dict[str, Any]:
    """Time training steps of each recipe and precision, augmentation and matmul peaks in one interleaved run.

    Args:
        recipes: names in :data:`RECIPES`.
        size: the step shape; a (recipe, precision) whose step is predicted (FLOPs / probed matmul
            rate) to take longer than ``budget_s`` is measured at ``fallback`` instead, or skipped.
            This is what happens to bf16 on a CPU without native bf16, where it is emulated.
        device, precisions: where and how (``"auto"`` allowed; fp16 on CPU is reported as skipped).
        repeats, warmup: timed and untimed calls per workload.
        augment: also time the trainer's multi-crop on a uint8 batch of ``size.batch`` images.

    Returns:
        a JSON-able dict: ``peaks`` (per dtype: n, FLOP/s best and median), ``cases`` (one per recipe and
        precision: seconds, images/s, FLOPs, achieved FLOP/s, MFU against the same-run peak of its
        dtype, peak memory above the pre-step level, model-state bytes) and ``augment``.
    """
    from ..device import resolve_device, resolve_precision
    from .augment import augment_workload
    from .peak import peak_result, probe_matmul
    from .timing import interleaved

    dev = resolve_device(device)
    precs: list[str] = []
    cases: list[dict[str, Any]] = []
    for p in precisions:
        try:
            r = resolve_precision(p, dev)
        except ConfigError as e:
            cases.append({"precision": p, "skipped": str(e)})
            continue
        if r not in precs:
            precs.append(r)
    matmuls = {p: probe_matmul(dev, p) for p in precs}
    rates = {p: matmuls[p].probed_rate for p in precs}
    workloads: dict[str, Any] = {f"matmul/{p}": matmuls[p].fn for p in precs}
    aug: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="dinolab-bench-") as tmp:
        for recipe in recipes:
            for p in precs:
                s, note = size, None
                trainer, objectives = build_trainer(recipe, s, str(dev), p, Path(tmp) / f"{recipe}-{p}")
                flops = step_flops(trainer, s)
                predicted = flops / rates[p]
                if predicted > budget_s and fallback is not None:
                    note = (f"{size.label} size ({size.crops}, batch {size.batch}) not run: predicted "
                            f"{predicted:.0f} s per step at the probed {p} matmul rate of "
                            f"{rates[p] / 1e9:.2f} GFLOP/s; measured at the {fallback.label} size instead")
                    s = fallback
                    trainer, objectives = build_trainer(recipe, s, str(dev), p, Path(tmp) / f"{recipe}-{p}-small")
                    flops = step_flops(trainer, s)
                    predicted = flops / rates[p]
                case = {"recipe": recipe, "precision": p, **case_info(s), "objectives": objectives, "flops": flops,
                        "state_bytes": state_bytes(trainer), "note": note}
                if predicted > budget_s:
                    cases.append({**case, "skipped": f"predicted {predicted:.0f} s per step > budget {budget_s:.0f} s"})
                    continue
                key = f"step/{recipe}/{p}/{s.label}"
                workloads[key], multicrop = step_workload(trainer, s)
                cases.append({**case, "key": key})
                if augment and aug is None and s == size:
                    load = trainer.config.data.load_size or 2 * s.global_size
                    workloads["augment"] = augment_workload(multicrop, s.batch, load, dev)
                    aug = {"batch": s.batch, "load_size": load, "crops": s.crops, "key": "augment"}
        meas = interleaved(workloads, repeats=repeats, warmup=warmup, device=dev, memory=True)
    peaks = {p: peak_result(matmuls[p], meas[f"matmul/{p}"]) for p in precs}
    for case in cases:
        if "key" not in case:
            continue
        m = meas[case.pop("key")]
        peak = peaks[case["precision"]]
        case.update(m.throughput(case["batch"]), flops_per_s=case["flops"] / m.best,
                    mfu=case["flops"] / m.best / peak["flops_per_s"],
                    mfu_median=case["flops"] / m.median / peak["flops_per_s_median"])
        if m.cpu_median and peak["flops_per_cpu_s"]:  # same ratio in CPU time: steadier on a shared CPU
            case["mfu_cpu_time"] = case["flops"] / m.cpu_median / peak["flops_per_cpu_s"]
    if aug is not None:
        aug.update(meas[aug.pop("key")].throughput(aug["batch"]))
        aug["vs_step"] = {f"{c['recipe']}/{c['precision']}": aug["images_per_s"] / c["images_per_s"]
                          for c in cases if "images_per_s" in c and c["label"] == size.label}
    return {"benchmark": "train", "device": str(dev), "size": case_info(size), "repeats": repeats,
            "peaks": peaks, "cases": cases, "augment": aug}


def summary(result: dict[str, Any]) -> str:
    """The result as a table (one row per recipe and precision) and the augmentation line."""
    from .report import gflops, mib, peaks_line, table

    rows = []
    for c in result["cases"]:
        rows.append({**c, "gflop": gflops(c.get("flops")), "gflops": gflops(c.get("flops_per_s")),
                     "mfu_pct": None if c.get("mfu") is None else 100 * c["mfu"],
                     "mfu_med": None if c.get("mfu_median") is None else 100 * c["mfu_median"],
                     "mfu_cpu": None if c.get("mfu_cpu_time") is None else 100 * c["mfu_cpu_time"],
                     "mem": mib(c.get("peak_bytes")), "state": mib(c.get("state_bytes")),
                     "note": c.get("skipped") or c.get("note")})
    cols = [("recipe", "recipe", "{}"), ("precision", "prec", "{}"), ("label", "size", "{}"), ("crops", "crops", "{}"),
            ("batch", "batch", "{}"), ("best_s", "s/step", "{:.3f}"), ("images_per_s", "img/s", "{:.2f}"),
            ("gflop", "GFLOP/step", "{:.1f}"), ("gflops", "GFLOP/s", "{:.2f}"), ("mfu_pct", "MFU%", "{:.1f}"),
            ("mfu_med", "MFU%(med)", "{:.1f}"), ("mfu_cpu", "MFU%(cpu)", "{:.1f}"), ("mem", "peak MiB", "{:.0f}"),
            ("state", "state MiB", "{:.0f}"),
            ("note", "note", "{}")]
    lines = [f"training step ({result['repeats']} interleaved rounds; peak memory above the pre-step level)",
             peaks_line(result["peaks"]), table(rows, cols),
             "MFU: analytic FLOP/s over the same-run matmul peak of the step's precision, from the best calls; "
             "(med): median calls; (cpu): median process CPU time of both (steadier on a shared CPU)"]
    aug = result.get("augment")
    if aug:
        ratios = ", ".join(f"{k} {v:.1f}x" for k, v in aug["vs_step"].items())
        lines.append(f"augmentation (multi-crop {aug['crops']} from {aug['load_size']} px, batch {aug['batch']}): "
                     f"{aug['images_per_s']:.2f} img/s (median {aug['images_per_s_median']:.2f}); "
                     f"vs training step: {ratios or '-'}")
    return "\n".join(lines)
