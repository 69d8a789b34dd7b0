"""Linear probes on frozen, precomputed features.

:func:`linear_probe` follows DINOv2's ``eval/linear.py``: one ``nn.Linear`` per learning rate
(weight ~ N(0, 0.01), bias 0), all trained together on the same batches with SGD (momentum 0.9,
no weight decay by default) and a cosine learning-rate schedule stepped every iteration; the
learning rates are DINOv2's grid scaled by ``batch_size / 256``. The best classifier is chosen on
the validation set, as in the official protocol: this is slightly optimistic, and the result says
so; ``selection="holdout"`` chooses on a held-out, stratified 10% of the training set instead.

Differences from the official runs: the features are computed once (no RandomResizedCrop / flip
augmentation per epoch), which is what makes the probe fast enough to run anywhere, and the number
of epochs defaults to what a small set needs to converge (see :func:`linear_probe`).

:func:`logistic_regression_probe` is the quick alternative of DINOv2's ``log_regression.py``
(cuML there, scikit-learn's L-BFGS here): the inverse regularisation C is swept on a held-out
part of the training set (or by cross-validation), then the model is refitted on the whole
training set with the best C.

Features: the CLS tokens of the last ``n`` blocks, optionally followed by the mean of the last
block's patch tokens (DINOv2's order; DINO v1 interleaved them), i.e.
``embed(model, data, n_last_blocks=n, patch_mean=True)`` then ``cls`` concatenated with
``patch_mean``.

Examples:
    >>> x, y = torch.randn(200, 8), torch.randint(0, 3, (200,))
    >>> res = linear_probe(x[:150], y[:150], x[150:], y[150:], epochs=2, progress=False)
    >>> res.best in res.grid, 0 <= res.top1 <= 1
    (True, True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..device import resolve_device
from ..errors import ConfigError, DataError
from .knn import as_feature_tensor, as_label_tensor
from .metrics import classification_report, topk_hits

# DINOv2 eval/linear.py learning rates, before scaling by batch_size / 256.
DINOV2_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
# Inverse regularisation strengths for the logistic-regression probe (DINOv2 sweeps 45 values over
# the same range on a GPU; one per decade is enough to find the plateau).
DEFAULT_CS = tuple(float(c) for c in np.logspace(-6, 5, 12))
SELECTION_NOTE = {
    "val": "hyper-parameter chosen on the validation set (official protocol; slightly optimistic)",
    "holdout": "hyper-parameter chosen on a held-out part of the training set; validation scores are unbiased",
    "cv": "hyper-parameter chosen by cross-validation on the training set; validation scores are unbiased",
}


@dataclass
class ProbeResult:
    """Outcome of a linear or logistic-regression probe.

    Attributes:
        method: ``"linear"`` (SGD grid) or ``"logreg"``.
        top1, top5: validation accuracy of the chosen classifier (fractions; top5 NaN below 5 classes).
        report: :func:`~dinolab.eval.metrics.classification_report` of the chosen classifier on val.
        predictions: ``(N_val,)`` int64.
        best: the chosen learning rate (linear) or C (logreg).
        grid: ``{lr or C: selection score}`` for every value tried.
        selection: ``"val"``, ``"holdout"`` or ``"cv"``; ``selection_note`` says what that means.
        classifier: ``nn.Linear`` that maps raw features to logits (any standardisation folded in).
        notes: remarks (non-converged fits, ...).
    """

    method: str
    top1: float
    top5: float
    report: dict
    predictions: np.ndarray
    best: float
    grid: dict[float, float]
    selection: str
    classifier: nn.Linear
    epochs: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def selection_note(self) -> str:
        return SELECTION_NOTE[self.selection]

    def to_dict(self) -> dict:
        """JSON-ready summary (no tensors)."""
        return {"method": self.method, "top1": self.top1, "top5": self.top5, "best": self.best,
                "grid": {str(k): v for k, v in self.grid.items()}, "selection": self.selection,
                "selection_note": self.selection_note, "epochs": self.epochs, "notes": self.notes,
                "balanced_accuracy": self.report["balanced_accuracy"], "macro_f1": self.report["macro_f1"],
                "per_class": self.report["per_class"]}


def _prepare(train_feats, train_labels, val_feats, val_labels, num_classes):
    xtr, xva = as_feature_tensor(train_feats, "train features"), as_feature_tensor(val_feats, "val features")
    if xtr.shape[1] != xva.shape[1]:
        raise DataError(f"train and val features differ in width ({xtr.shape[1]} vs {xva.shape[1]}); "
                        "embed both sets with the same model and options")
    ytr = as_label_tensor(train_labels, xtr.shape[0], "train labels")
    yva = as_label_tensor(val_labels, xva.shape[0], "val labels")
    c = num_classes or int(max(ytr.max(), yva.max())) + 1
    if max(ytr.max(), yva.max()) >= c:
        raise DataError(f"a label is out of range for {c} classes")
    if len(torch.unique(ytr)) < 2:
        raise DataError("the training set has a single class; a probe needs at least two")
    return xtr, ytr, xva, yva, c


def _holdout_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split (:func:`dinolab.data.splits.stratified_split`): ``round(fraction·n_c)`` images of each
    class held out, at least one of every class with two or more, none of a class of one; ``(fit_idx, held_idx)``.
    A random 10% would leave the rare classes of a long-tailed set out of the learning-rate choice."""
    from ..data.splits import stratified_split

    fit, held = stratified_split(y.cpu().numpy(), fraction, seed)
    if len(held) == 0:
        raise DataError("the training set is too small to hold out a selection split; use selection='val'")
    return torch.from_numpy(fit), torch.from_numpy(held)


def _fold_standardisation(weight: torch.Tensor, bias: torch.Tensor, mean, std) -> nn.Linear:
    """nn.Linear on raw x equal to ``W (x - mean) / std + b``."""
    w = weight / std if std is not None else weight
    b = bias - (w @ mean if mean is not None else 0)
    layer = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    return layer


def _finish(method, logits_or_scores, yva, classes, c, **kw) -> ProbeResult:
    scores = np.asarray(logits_or_scores)
    pred = scores.argmax(1).astype(np.int64)
    rep = classification_report(yva.numpy(), pred, classes if classes is not None else c)
    top5 = float(topk_hits(scores, yva.numpy(), 5).mean()) if c >= 5 else math.nan
    return ProbeResult(method=method, top1=rep["accuracy"], top5=top5, report=rep, predictions=pred, **kw)


def _train_heads(x, y, x_sel, y_sel, c: int, lrs: list[float], *, epochs: int, batch_size: int, weight_decay: float,
                 device: torch.device, seed: int, progress: bool):
    """SGD (momentum 0.9) with a per-step cosine schedule for ``len(lrs)`` linear heads at once.

    The heads share one ``(D, L*C)`` weight matrix so that a step is one matrix product; each head's
    columns get their own learning rate. The summed loss is exact: no head sees another's gradient.
    Returns ``weights (L, C, D)``, ``biases (L, C)`` on the CPU and the selection accuracy of each head.
    """
    n, d = x.shape
    n_heads = len(lrs)
    g = torch.Generator().manual_seed(seed)  # head i's initial weights do not depend on the other heads
    w = torch.cat([torch.randn(d, c, generator=g) * 0.01 for _ in lrs], dim=1).to(device).requires_grad_()
    g.manual_seed(seed + 1)  # batch order
    b = torch.zeros(n_heads * c, device=device, requires_grad=True)
    lr_cols = torch.tensor(lrs, device=device).repeat_interleave(c)
    bufs = [torch.zeros_like(w), torch.zeros_like(b)]
    x, y = x.to(device), y.to(device)
    total, step = epochs * math.ceil(n / batch_size), 0
    for _ in tqdm(range(epochs), desc="linear probe", disable=None if progress else True, leave=False):
        perm = torch.randperm(n, generator=g).to(device)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            logits = (x[idx] @ w + b).view(len(idx), n_heads, c)
            # cross_entropy wants the class dim second: (B, C, L) against targets (B, L); sum of per-head means
            loss = F.cross_entropy(logits.transpose(1, 2), y[idx, None].expand(-1, n_heads), reduction="sum") / len(idx)
            w.grad = b.grad = None
            loss.backward()
            factor = 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.no_grad():
                for p, buf, lr in ((w, bufs[0], lr_cols), (b, bufs[1], lr_cols)):
                    buf.mul_(0.9).add_(p.grad + weight_decay * p)
                    p.sub_(buf * (lr * factor))
            step += 1
    with torch.no_grad():
        weights = w.detach().view(d, n_heads, c).permute(1, 2, 0).cpu()
        biases = b.detach().view(n_heads, c).cpu()
        pred = torch.einsum("nd,lcd->lnc", x_sel.float(), weights).add(biases[:, None]).argmax(-1)
        sel_acc = [float(a) for a in (pred == y_sel[None]).double().mean(1)]
    return weights, biases, sel_acc


def linear_probe(train_feats, train_labels, val_feats, val_labels, *, lrs: Sequence[float] | None = None,
                 epochs: int | None = None, batch_size: int = 256, weight_decay: float = 0.0,
                 standardize: bool = False, selection: str = "val", num_classes: int | None = None,
                 classes: Sequence[str] | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 progress: bool = True) -> ProbeResult:
    """Train one linear classifier per learning rate on frozen features; keep the best.

    Args:
        train_feats: ``(N, D)``; train_labels: ``(N,)``; val_feats: ``(M, D)``; val_labels: ``(M,)``.
        lrs: base learning rates (each multiplied by ``batch_size / 256``); default DINOv2's 13 values
            from 1e-5 to 0.1.
        epochs: passes over the training features. Default: 10 (DINOv2's 12,500 iterations on ImageNet
            are 10 epochs), raised so that at least 1,000 iterations run on small sets.
        batch_size: images per SGD step.
        weight_decay: L2 penalty of SGD (0 in the official protocol).
        standardize: subtract the training mean and divide by the training std of each feature first.
        selection: ``"val"`` (official) or ``"holdout"`` (a stratified 10% of train; val scores become unbiased).
        num_classes, classes: number and names of classes (default from the labels).
        device: where to train (``"auto"`` picks a GPU when present).
        seed: initialisation and batch order.

    Returns:
        :class:`ProbeResult` (``best`` is the unscaled learning rate).
    """
    if selection not in ("val", "holdout"):
        raise ConfigError(f"selection={selection!r} must be 'val' or 'holdout'")
    xtr, ytr, xva, yva, c = _prepare(train_feats, train_labels, val_feats, val_labels,
                                     num_classes or (len(classes) if classes is not None else None))
    base_lrs = [float(x) for x in (lrs or DINOV2_LRS)]
    if not base_lrs or min(base_lrs) <= 0:
        raise ConfigError(f"learning rates must be positive, got {lrs}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    mean = std = None
    if standardize:
        mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
        xtr, xva = (xtr - mean) / std, (xva - mean) / std
    if selection == "holdout":
        fit_idx, held_idx = _holdout_split(ytr, 0.1, seed)
        x_fit, y_fit, x_sel, y_sel = xtr[fit_idx], ytr[fit_idx], xtr[held_idx], ytr[held_idx]
    else:
        x_fit, y_fit, x_sel, y_sel = xtr, ytr, xva, yva
    n, d = x_fit.shape
    bs = min(batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    if epochs is None:
        epochs = max(10, math.ceil(1000 / steps_per_epoch))

    scaled = [lr * batch_size / 256 for lr in base_lrs]
    w, b, sel_acc = _train_heads(x_fit, y_fit, x_sel, y_sel, c, scaled, epochs=epochs, batch_size=bs,
                                 weight_decay=weight_decay, device=dev, seed=seed, progress=progress)
    best = int(np.argmax(sel_acc))  # first (smallest) lr among ties
    logits = (xva @ w[best].T + b[best])
    layer = _fold_standardisation(w[best], b[best], mean, std)
    notes = []
    if not np.isfinite(logits.numpy()).all():
        notes.append("some logits are not finite; lower the learning rates or pass standardize=True")
    return _finish("linear", logits.numpy(), yva, classes, c, best=base_lrs[best],
                   grid=dict(zip(base_lrs, sel_acc)), selection=selection, classifier=layer, epochs=epochs, notes=notes)


def logistic_regression_probe(train_feats, train_labels, val_feats, val_labels, *, Cs: Sequence[float] | None = None,
                              selection: str = "holdout", holdout: float = 0.1, cv: int = 5, max_iter: int = 1000,
                              standardize: bool = True, num_classes: int | None = None,
                              classes: Sequence[str] | None = None, seed: int = 0) -> ProbeResult:
    """Multinomial logistic regression (L-BFGS, L2) with C chosen on training data, refitted on all of it.

    Args:
        train_feats, train_labels, val_feats, val_labels: as :func:`linear_probe`.
        Cs: inverse regularisation strengths to try (default 1e-6 .. 1e5, one per decade).
        selection: ``"holdout"`` (a stratified ``holdout`` fraction of train), ``"cv"`` (``cv``-fold
            stratified cross-validation on train) or ``"val"`` (the official DINOv2 fallback when no
            separate split exists: chosen on val, optimistic).
        max_iter: L-BFGS iterations per fit; a fit that stops before converging is named in ``notes``.
        standardize: scale features to zero mean / unit variance on train first (helps L-BFGS; DINOv2
            feeds the raw CLS features).

    Returns:
        :class:`ProbeResult` (``best`` is C).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    if selection not in ("holdout", "cv", "val"):
        raise ConfigError(f"selection={selection!r} must be 'holdout', 'cv' or 'val'")
    xtr, ytr, xva, yva, c = _prepare(train_feats, train_labels, val_feats, val_labels,
                                     num_classes or (len(classes) if classes is not None else None))
    Cs = [float(x) for x in (Cs or DEFAULT_CS)]
    if not Cs or min(Cs) <= 0:
        raise ConfigError(f"C values must be positive, got {Cs}")
    mean = std = None
    x64, v64 = xtr.double(), xva.double()
    if standardize:
        mean, std = x64.mean(0), x64.std(0).clamp_min(1e-6)
        x64, v64 = (x64 - mean) / std, (v64 - mean) / std
    X, Xv, y, yv = x64.numpy(), v64.numpy(), ytr.numpy(), yva.numpy()
    unconverged: set[float] = set()

    def fit(C, xs, ys):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-6).fit(xs, ys)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            unconverged.add(C)
        return model

    if selection == "cv":
        counts = np.bincount(y)
        folds = min(cv, int(counts[counts > 0].min()))
        if folds < 2:
            raise DataError("cross-validation needs at least 2 training images per class; use selection='holdout'")
        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))
    elif selection == "holdout":
        fit_idx, held_idx = _holdout_split(ytr, holdout, seed)
        splits = [(fit_idx.numpy(), held_idx.numpy())]
    grid = {}
    for C in Cs:
        if selection == "val":
            grid[C] = float((fit(C, X, y).predict(Xv) == yv).mean())
        else:
            grid[C] = float(np.mean([(fit(C, X[a], y[a]).predict(X[b]) == y[b]).mean() for a, b in splits]))
    best = max(Cs, key=lambda C: (grid[C], -C))  # smallest C (strongest regularisation) among ties
    model = fit(best, X, y)
    dec = model.decision_function(Xv)
    cls = model.classes_
    scores = np.full((len(Xv), c), -np.inf)
    w = torch.zeros(c, X.shape[1], dtype=torch.float64)
    b = torch.zeros(c, dtype=torch.float64)
    if dec.ndim == 1:  # binary: one score for the second class; logits (0, score) rank the same way
        scores[:, cls[0]], scores[:, cls[1]] = 0.0, dec
        w[cls[1]], b[cls[1]] = torch.from_numpy(model.coef_[0]), float(model.intercept_[0])
    else:
        scores[:, cls] = dec
        w[cls], b[cls] = torch.from_numpy(model.coef_), torch.from_numpy(model.intercept_)
    layer = _fold_standardisation(w, b, mean, std).float()
    absent = sorted(set(range(c)) - set(cls.tolist()))
    with torch.no_grad():
        layer.bias[absent] = -1e9  # classes with no training image are never predicted
    notes = [f"L-BFGS did not converge within max_iter={max_iter} for C in {sorted(unconverged)}; "
             "raise max_iter if the best C is among them"] if unconverged else []
    return _finish("logreg", scores, yva, classes, c, best=best, grid=grid, selection=selection, classifier=layer,
                   notes=notes)
