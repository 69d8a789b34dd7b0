"""``dinolab.compare.compare``: every method of :mod:`dinolab.compare.methods` on one train / test split.

The split is stratified and seeded (``test_fraction`` of each class, at least one image of a class
with two or more kept on each side), unless a separate test set is given. The frozen features are
embedded once (``dinolab.embed``: final-norm CLS) and shared by every feature method. Each method's
test probabilities are scored with :mod:`dinolab.eval.metrics` (accuracy, balanced accuracy,
macro-F1, worst-class recall, ECE, per-class recall, confusion matrix) and 95% percentile-bootstrap
intervals over the test set (:mod:`dinolab.eval.bootstrap`). A few-shot method returns one set of
probabilities per episode: its value is the mean over episodes and its interval comes from
resamples spread evenly over the episodes (each resample: one episode, test images drawn with
replacement), so it holds both the episode and the test-set variation. ``wall_s`` is the method's
own time (the shared embedding is timed once, as ``embed_s``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data.splits import stratified_split as split_per_class
from ..errors import ConfigError, DataError
from ..eval.bootstrap import bootstrap_metrics
from ..eval.metrics import classification_report
from .methods import METHODS, Context, Method


class Subset:
    """Images ``indices`` of a data set, as a data set (``paths``, ``labels``, ``classes``, ``load``)."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, np.asarray(indices, np.int64)
        self.paths = [dataset.paths[i] for i in self.indices]
        self.labels = None if dataset.labels is None else np.asarray(dataset.labels)[self.indices]
        self.classes, self.source = dataset.classes, f"{getattr(dataset, 'source', 'data')} (part)"

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int, **kw: Any):
        return self.dataset.load(int(self.indices[i]), **kw)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` positions by :func:`dinolab.data.splits.stratified_split` (``round(test_fraction * n_c)`` of
    each class to test, at least 1 when the class has 2 or more images, never all of them)."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}")
    return split_per_class(labels, test_fraction, seed)


@dataclass
class MethodResult:
    name: str
    method: str
    variant: str
    metrics: dict[str, dict[str, float]]
    per_class: dict[str, dict]
    confusion: list[list[int]]
    wall_s: float
    episodes: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "variant": self.variant, "metrics": self.metrics,
                "per_class": self.per_class, "confusion": self.confusion, "wall_s": self.wall_s,
                "episodes": self.episodes}


@dataclass
class CompareResult:
    classes: list[str]
    n_train: int
    n_test: int
    train_counts: list[int]
    test_counts: list[int]
    results: list[MethodResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"command": "compare", "classes": self.classes, "n_train": self.n_train, "n_test": self.n_test,
                "train_counts": self.train_counts, "test_counts": self.test_counts, **self.info,
                "results": [r.to_dict() for r in self.results]}


def score(name: str, method: str, variant: str, probs: Any, y: np.ndarray, classes: list[str], wall_s: float, *,
          n_resamples: int = 1000, seed: int = 0) -> MethodResult:
    """A :class:`MethodResult` from ``(N, C)`` probabilities, or a list of them (episodes)."""
    episodes = list(probs) if isinstance(probs, (list, tuple)) else [probs]
    c = len(classes)
    reports = [classification_report(y, p.argmax(1), classes) for p in episodes]
    per_res = -(-n_resamples // len(episodes))
    boots = [bootstrap_metrics(p, y, n_resamples=per_res, seed=seed + e, num_classes=c, draws=True)
             for e, p in enumerate(episodes)]
    metrics = {}
    for key in boots[0]:
        draws = np.concatenate([b[key]["draws"] for b in boots])
        low, high = np.nanquantile(draws, (0.025, 0.975))
        metrics[key] = {"value": float(np.mean([b[key]["value"] for b in boots])), "low": float(low),
                        "high": float(high)}
    per_class = {n: {"recall": float(np.nanmean([r["per_class"][n]["recall"] for r in reports])),
                     "f1": float(np.nanmean([r["per_class"][n]["f1"] for r in reports])),
                     "support": reports[0]["per_class"][n]["support"]} for n in classes}
    confusion = sum(np.bincount(y * c + p.argmax(1), minlength=c * c).reshape(c, c) for p in episodes)
    return MethodResult(name, method, variant, metrics, per_class, confusion.tolist(), wall_s,
                        len(episodes) if isinstance(probs, (list, tuple)) else None)


def run_methods(ctx: Context, methods: Sequence[Method], *, n_resamples: int = 1000,
                progress: bool = True) -> list[MethodResult]:
    """Run every (method, variant) on ``ctx``; a line per run on stderr with ``progress``."""
    jobs = [(m, v) for m in methods for v in m.variants]
    out = []
    for i, (m, v) in enumerate(jobs, 1):
        name = m.name if v == "plain" else f"{m.name} +{v}"
        start = time.perf_counter()
        probs = m.run(ctx, v)
        wall = time.perf_counter() - start
        out.append(score(name, m.name, v, probs, ctx.test_labels, ctx.classes, wall, n_resamples=n_resamples,
                         seed=ctx.seed))
        if progress:
            print(f"compare [{i}/{len(jobs)}] {name}: balanced accuracy "
                  f"{100 * out[-1].metrics['balanced_accuracy']['value']:.2f}% ({wall:.1f} s)", file=sys.stderr)
    return out


def select_methods(names: Sequence[str] | None, *, aligned: bool) -> list[Method]:
    """The registered methods named (all by default; zero-shot only with an aligned model)."""
    if names:
        unknown = [n for n in names if n not in METHODS]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(METHODS)}")
        chosen = [METHODS[n] for n in names]
    else:
        chosen = [m for m in METHODS.values() if m.default]
    missing = [m.name for m in chosen if m.needs == "aligned" and not aligned]
    if names and missing:
        raise ConfigError(f"{', '.join(missing)} needs an aligned model: --aligned A --classes ...")
    return [m for m in chosen if m.needs != "aligned" or aligned]


def check_split(train_labels: np.ndarray, test_labels: np.ndarray, classes: list[str]) -> None:
    missing = [classes[c] for c in range(len(classes)) if not (train_labels == c).any()]
    if missing:
        raise DataError(f"classes without training images: {', '.join(missing[:8])}; add images of them or remove "
                        f"them from the data")
    if len(test_labels) == 0:
        raise DataError("the test split is empty; give more images or a test set with --test")
