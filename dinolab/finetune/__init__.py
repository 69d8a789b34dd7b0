"""Fine-tuning a classifier on a DINO backbone, for small and imbalanced labelled sets.

:func:`finetune` trains a :class:`~dinolab.finetune.classifier.Classifier` (backbone + linear head)
in one of four modes (``head``, ``last:N``, ``lora``, ``full``; :mod:`.modes`) with the imbalance
options of :mod:`.imbalance`, early stopping on the validation balanced accuracy and temperature
scaling (:mod:`.calibration`), in a resumable run folder (:mod:`.trainer`). The settings are a
:class:`~dinolab.finetune.config.FinetuneConfig`.

Modules: :mod:`.config` (settings), :mod:`.data` (labelled sources, stratified split, decoding),
:mod:`.augment` (random resized crop, flip), :mod:`.imbalance`, :mod:`.lora`, :mod:`.modes`,
:mod:`.calibration`, :mod:`.classifier` (the saved classifier), :mod:`.trainer` (the loop),
:mod:`.report` (metrics, confusion matrix, summary).
"""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["finetune", "FinetuneResult", "Classifier", "save_classifier", "load_classifier"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` made.

    Attributes:
        out: the run folder. classifier_path: ``out/classifier.safetensors`` (None if a signal stopped the run).
        classes: class names in logit order.
        val_metrics: on the validation split, with the saved classifier: ``accuracy``, ``balanced_accuracy``,
            ``macro_f1``, ``per_class`` (recall, precision, F1, support), ``nll`` (calibrated) and
            ``nll_uncalibrated``.
        temperature: the fitted calibration temperature (1.0 without calibration).
        summary: everything in ``out/summary.json``. history: the per-epoch records of ``metrics.jsonl``.
        stopped_by: ``"SIGTERM"`` / ``"SIGINT"`` when a signal stopped the run (a checkpoint saved), else None.
    """

    out: Path
    classifier_path: Path | None
    classes: list[str]
    val_metrics: dict[str, Any]
    temperature: float
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None


def finetune(weights: Any, train_data: Any, out: str | os.PathLike, *, val: Any = None, mode: str = "head",
             force: bool = False, resume: bool = False, **overrides: Any) -> FinetuneResult:
    """Fine-tune a classifier on ``weights`` with the labelled images ``train_data``; writes ``out``.

    Args:
        weights: backbone weights (any file :func:`dinolab.load_model` reads, a `dinolab train` run folder) or
            a backbone module (copied, never changed).
        train_data: class-per-subfolder folder, ``.csv`` / ``.txt`` of ``path,label`` rows, or ``builtin:NAME``.
        out: the run folder (refused when it holds files, unless ``force`` or ``resume``).
        val: labelled validation images (default: a stratified ``val_fraction`` of ``train_data``).
        mode: ``"head"``, ``"last:N"``, ``"lora"`` or ``"full"``.
        force: replace an earlier run in ``out``. resume: continue it from its checkpoint.
        **overrides: :class:`~dinolab.finetune.config.FinetuneConfig` fields (``epochs``, ``balance``, ...),
            ``config`` (a whole FinetuneConfig), ``on_epoch`` (``f(epoch, record)`` after each epoch) and
            ``on_step`` (``f(step, loss)`` after each optimizer step).

    Examples:
        >>> import dinolab
        >>> bb = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)
        >>> r = finetune(bb, "builtin:digits?size=16", "/tmp/doctest_ft", force=True, epochs=1, device="cpu",
        ...              progress=False, precision="fp32")   # doctest: +SKIP
    """
    from .trainer import run_finetune

    return run_finetune(weights, train_data, out, val=val, mode=mode, force=force, resume=resume, **overrides)


def __getattr__(name: str) -> Any:
    if name in ("Classifier", "save_classifier", "load_classifier"):
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'dinolab.finetune' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``dinolab.finetune(...)`` stays the function once this package is imported (as ``dinolab.train`` does):
    importing ``dinolab.finetune`` puts the package, not the function, on ``dinolab``."""

    def __call__(self, *args: Any, **kwargs: Any) -> FinetuneResult:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
