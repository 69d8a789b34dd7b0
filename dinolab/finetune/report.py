"""The end of a fine-tuning run: best epoch's weights, post-hoc adjustment, calibration, files, summary.

Writes ``classifier.safetensors`` (LoRA merged, the post-hoc logit adjustment folded into the head's
bias, the fitted temperature), ``summary.json``, ``confusion.png`` (validation split, rows
normalised) and ``skipped.log`` when images were unreadable.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from ..io import atomic_save_text
from ..runtime.run_dir import write_skipped_log
from . import FinetuneResult


def _json_safe(x: Any) -> Any:
    """``x`` with NaN / inf (e.g. the recall of a class without validation images) as None: JSON has no NaN."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return None if isinstance(x, float) and not np.isfinite(x) else x


def fold_posthoc(job: Any) -> None:
    """``logit_adjust=posthoc``: subtract ``τ·log π`` from the head's bias, so the saved logits carry it."""
    if job.cfg.logit_adjust == "posthoc":
        with torch.no_grad():
            job.model.head.bias.sub_(job.cfg.tau * job.log_prior.to(job.model.head.bias))


def calibrate(job: Any, logits: torch.Tensor) -> tuple[float, float, float]:
    """``(T, val NLL at T=1, val NLL at T)``; T = 1 with ``calibrate=False``."""
    from .calibration import fit_temperature, nll

    y = job.val.labels
    t = fit_temperature(logits, y) if job.cfg.calibrate else 1.0
    return t, nll(logits, y), nll(logits, y, t)


def summary_of(job: Any, report: dict[str, Any], t: float, nll_before: float, nll_after: float) -> dict[str, Any]:
    best = job.best
    return {"mode": job.cfg.mode, "classes": job.classes, "train_images": len(job.train),
            "train_counts": {c: int(n) for c, n in zip(job.classes, job.counts)}, "val_images": len(job.val),
            "held_out_from_train": job.held_out, "unreadable_images": len(job.bad),
            "epochs_run": len(job.history), "best_epoch": best.get("epoch"), "early_stopped": job.early_stopped,
            "select": job.cfg.select, "val_accuracy": report["accuracy"],
            "val_balanced_accuracy": report["balanced_accuracy"], "val_macro_f1": report["macro_f1"],
            "val_per_class_recall": {c: v["recall"] for c, v in report["per_class"].items()},
            "temperature": t, "val_nll_before": nll_before, "val_nll_after": nll_after,
            "imbalance": {k: getattr(job.cfg, k) for k in ("balance", "loss_weights", "beta", "logit_adjust", "tau",
                                                           "label_smoothing")}}


def _metadata(job: Any) -> dict[str, Any]:
    from ..runtime.config_loader import to_dict

    return {"training": to_dict(job.cfg), "train_counts": [int(n) for n in job.counts],
            "posthoc_logit_adjustment_in_bias": job.cfg.logit_adjust == "posthoc"}


def finish(job: Any) -> FinetuneResult:
    """Write the run's outputs (see the module docstring) and return the result."""
    from ..eval.metrics import classification_report
    from ..eval.viz import plot_confusion_matrix
    from .classifier import FILE_NAME, save_classifier
    from .lora import merge_lora
    from .trainer import load_trainable, val_logits

    if job.best:
        load_trainable(job, job.best["state"])
    fold_posthoc(job)
    merge_lora(job.model.backbone)
    job.model.backbone.requires_grad_(False)
    logits = val_logits(job)  # the saved model's own logits
    t, before, after = calibrate(job, logits)
    y, pred = job.val.labels.numpy(), logits.argmax(1).numpy()
    report = classification_report(y, pred, job.classes)
    c = len(job.classes)
    matrix = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    model = job.model.cpu().eval()
    model.temperature = t
    model.metadata = _metadata(job)
    path = job.run_dir / FILE_NAME
    save_classifier(path, model)
    summary = summary_of(job, report, t, before, after)
    summary["confusion_matrix"] = matrix.tolist()
    atomic_save_text(job.run_dir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    plot_confusion_matrix(matrix, job.classes, job.run_dir / "confusion.png")
    if job.bad:
        write_skipped_log(job.run_dir, job.bad)
    metrics = {**report, "nll": after, "nll_uncalibrated": before}
    return FinetuneResult(job.run_dir, path, list(job.classes), metrics, t, summary=summary, history=job.history)
