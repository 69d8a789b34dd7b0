"""The methods ``dinolab compare`` runs: a registry of names -> functions that return test probabilities.

A :class:`Method` has a ``name``, the ``variants`` it runs (``"plain"`` first, then its imbalance
handlings), what it ``needs`` (``"features"``: the frozen features embedded once and shared;
``"images"``: the train / test images themselves, e.g. fine-tuning; ``"aligned"``: an aligned
model) and ``run(ctx, variant) -> (N_test, C)`` probabilities, or a list of them (one per
few-shot episode). More methods (the fine-tuning modes) are added with :func:`register_method`.

Imbalance handling, where it applies (``variant`` names as shown in the results):

- ``balanced`` (k-NN): each class's votes divided by its number of training images;
- ``balanced`` (logistic regression): loss weights ``n / (C * n_c)`` (scikit-learn's ``"balanced"``);
- ``logit-adj`` (linear classifiers): post-hoc logit adjustment ``logits - log pi_c`` with ``pi_c`` the
  training class frequencies (Menon et al. 2021, tau = 1);
- few-shot prototypes have no variant: their support is balanced by construction (``k`` images per
  class; a class with fewer than ``k`` training images contributes all of them).

A post-hoc variant (``logit-adj``) reuses its method's plain fit (cached in ``Context.extra``), so its
wall time is that of the adjustment alone. Choices (C, learning rate) are made on a held-out part of
the training set, never on the test labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..data.splits import stratified_split
from ..predict.heads import knn_proba, linear_proba, prototype_proba

KNN_K, KNN_T = 20, 0.07
LOGREG_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass
class Context:
    """What every method sees. Features ``(N, D)`` float32 and labels ``(N,)`` int64 of each split, the class
    names, the train / test image subsets (for methods on images), the aligned model (or None), the
    backbone weights path, the seed, few-shot episodes and the inference options."""

    classes: list[str]
    train_labels: np.ndarray
    test_labels: np.ndarray
    train_feats: np.ndarray | None = None
    test_feats: np.ndarray | None = None
    train_images: Any = None
    test_images: Any = None
    aligned: Any = None
    weights: Any = None
    seed: int = 0
    episodes: int = 20
    options: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def priors(self) -> np.ndarray:
        """``(C,)`` training class frequencies (a class absent from train gets a tiny share, not 0)."""
        counts = np.bincount(self.train_labels, minlength=self.num_classes).astype(np.float64)
        return np.maximum(counts, 1e-3) / counts.sum()


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Context, str], Any]
    variants: tuple[str, ...] = ("plain",)
    needs: str = "features"
    description: str = ""
    default: bool = True  # run when no methods are named (False: only on request, e.g. full fine-tuning)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method; the registration order is the order of the results."""
    METHODS[method.name] = method
    return method


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).float()


def _knn(ctx: Context, variant: str) -> np.ndarray:
    counts = torch.from_numpy(np.bincount(ctx.train_labels, minlength=ctx.num_classes)) if variant == "balanced" else None
    return knn_proba(_t(ctx.test_feats), _t(ctx.train_feats), torch.from_numpy(ctx.train_labels), k=KNN_K,
                     temperature=KNN_T, num_classes=ctx.num_classes, class_counts=counts).numpy()


def _prototype(shots: int) -> Callable[[Context, str], list[np.ndarray]]:
    def run(ctx: Context, variant: str) -> list[np.ndarray]:
        from ..eval.fewshot import class_centroids

        rng = np.random.default_rng([ctx.seed, shots])
        by_class = [np.flatnonzero(ctx.train_labels == c) for c in range(ctx.num_classes)]
        x, test = _t(ctx.train_feats), _t(ctx.test_feats)
        out = []
        for _ in range(ctx.episodes):
            support = np.concatenate([rng.permutation(m)[:shots] for m in by_class])
            centroids, present = class_centroids(x[support], ctx.train_labels[support], ctx.num_classes)
            out.append(prototype_proba(test, centroids, present, temperature=KNN_T).numpy())
        return out
    return run


def _adjust(ctx: Context, variant: str) -> torch.Tensor | None:
    return torch.from_numpy(np.log(ctx.priors())).float() if variant == "logit-adj" else None


def _logreg(ctx: Context, variant: str) -> np.ndarray:
    """scikit-learn logistic regression on standardised features; C chosen on a stratified 20% of train by
    balanced accuracy, then refitted on all of train. ``logit-adj`` reuses the plain fit."""
    weight = "balanced" if variant == "balanced" else None
    key = ("logreg", weight)
    if key not in ctx.extra:
        ctx.extra[key] = _fit_logreg(ctx, weight)
    w, b = ctx.extra[key]
    return linear_proba(_t(ctx.test_feats), w, b, _adjust(ctx, variant)).numpy()


def _fit_logreg(ctx: Context, weight: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, D)`` weight and ``(C,)`` bias on the raw features (the standardisation folded in)."""
    from sklearn.linear_model import LogisticRegression

    x, y = ctx.train_feats.astype(np.float64), ctx.train_labels
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    fit_idx, held_idx = stratified_split(y, 0.2, ctx.seed)
    if len(held_idx) == 0:  # one image per class: nothing to hold out, choose on the training fit itself
        fit_idx = held_idx = np.arange(len(y))

    def fit(C: float, idx: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=500, class_weight=weight).fit(xs[idx], y[idx])

    best = max(LOGREG_CS, key=lambda C: _balanced_accuracy(y[held_idx], fit(C, fit_idx).predict(xs[held_idx])))
    model = fit(best, np.arange(len(y)))
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # one score z for the second class: logits (-z/2, z/2) give sigmoid(z)
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    w = torch.zeros(ctx.num_classes, xs.shape[1], dtype=torch.float64)
    b = torch.full((ctx.num_classes,), -1e4, dtype=torch.float64)  # a class without training images: never predicted
    w[model.classes_] = torch.from_numpy(coef / std)
    b[model.classes_] = torch.from_numpy(intercept - (coef / std) @ mean)
    return w.float(), b.float()


def _linear(ctx: Context, variant: str) -> np.ndarray:
    """DINOv2's SGD linear probe (:func:`dinolab.eval.linear.linear_probe`), learning rate chosen on a held-out
    stratified 10% of train (the test labels are never used for a choice)."""
    from ..eval.linear import linear_probe

    if "linear" not in ctx.extra:  # logit-adj reuses the plain fit
        ctx.extra["linear"] = linear_probe(ctx.train_feats, ctx.train_labels, ctx.test_feats, ctx.test_labels,
                                           selection="holdout", standardize=True, num_classes=ctx.num_classes,
                                           seed=ctx.seed, progress=False).classifier
    layer = ctx.extra["linear"]
    return linear_proba(_t(ctx.test_feats), layer.weight.detach(), layer.bias.detach(), _adjust(ctx, variant)).numpy()


def _zeroshot(ctx: Context, variant: str) -> np.ndarray:
    from ..predict.predictor import ZeroShotPredictor
    from ..predict.run import predict_images

    predictor = ZeroShotPredictor(ctx.aligned, ctx.extra.get("zeroshot_classes") or ctx.classes)
    kw = ctx.options.embed_kwargs() if ctx.options is not None else {"progress": False}
    return predict_images(predictor, ctx.test_images, **kw).probs


def _balanced_accuracy(t: np.ndarray, p: np.ndarray) -> float:
    from ..eval.metrics import classification_report

    return classification_report(t, p)["balanced_accuracy"]


for _m in (Method("zeroshot", _zeroshot, needs="aligned", description="zero-shot by class names (aligned model)"),
           Method("knn", _knn, ("plain", "balanced"), description=f"weighted k-NN, k = {KNN_K}, T = {KNN_T}"),
           *(Method(f"prototype {k}-shot", _prototype(k), description=f"nearest class mean of {k} images per class, "
                    "mean over episodes") for k in (1, 5, 10)),
           Method("logreg", _logreg, ("plain", "balanced", "logit-adj"), description="logistic regression"),
           Method("linear", _linear, ("plain", "logit-adj"), description="SGD linear probe (DINOv2 grid)")):
    register_method(_m)
