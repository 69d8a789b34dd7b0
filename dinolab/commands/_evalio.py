"""Plumbing shared by the feature-evaluation commands (``knn``, ``linear``, ``fewshot``, ``retrieve``).

Each data split comes either from a folder (embedded with WEIGHTS) or from an ``.npz`` written by
``dinolab embed``; results print as plain-text tables and optionally go to a JSON file.
Not a sub-command (the leading underscore keeps it out of ``dinolab --help``).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Sequence

from ..io import json_value as _jsonable


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", nargs="?", metavar="WEIGHTS",
                        help="weights file or folder (any format dinolab.load_model reads); "
                             "not needed when every input is given as precomputed embeddings")


def add_split_arguments(parser: argparse.ArgumentParser, splits: Sequence[tuple[str, str]],
                        weights: bool = True) -> None:
    """WEIGHTS, then ``--NAME DIR`` / ``--NAME-embeddings FILE.npz`` for each ``(NAME, description)``."""
    if weights:
        add_weights_argument(parser)
    for name, what in splits:
        parser.add_argument(f"--{name}", metavar="DIR", help=f"{what}: a folder (class-per-subfolder for labels), "
                                                              ".txt list or builtin:NAME")
        parser.add_argument(f"--{name}-embeddings", metavar="FILE.npz",
                            help=f"{what} as precomputed embeddings from `dinolab embed` (instead of --{name})")


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    """The :class:`~dinolab.eval.options.InferenceOptions` group plus ``--max-bad-fraction``."""
    from ..eval.options import add_inference_arguments

    g = add_inference_arguments(parser, title="embedding images (with WEIGHTS)", extra=("runtime",))
    g.add_argument("--max-bad-fraction", type=float, default=0.1, metavar="F",
                   help="unreadable files are skipped and named; stop if more than this share of a folder is "
                        "unreadable (default 0.1)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


class SplitLoader:
    """Loads splits named on the command line, loading the model once if any split needs it."""

    def __init__(self, args: argparse.Namespace, command: str = "dinolab"):
        from ..eval.options import InferenceOptions

        self.args, self.command = args, command
        self.options = InferenceOptions.from_args(args)  # checks the values before any work
        self._model = None
        self.preprocess = None  # what the model is fed, once loaded

    def model(self):
        from ..errors import ConfigError

        if self._model is None:
            if not self.args.weights:
                raise ConfigError("image folders need WEIGHTS to embed them; give a weights file first, or "
                                  "precomputed embeddings with the --*-embeddings options")
            self._model = self.options.load_model(self.args.weights)
            self.preprocess = self.options.preprocess_for(self._model, announce=self.command)
        return self._model

    def has(self, name: str) -> bool:
        return bool(getattr(self.args, name) or getattr(self.args, f"{name}_embeddings"))

    def load(self, name: str, *, labels: bool = True, n_last_blocks: int = 1, patch_mean: bool = False,
             flags: tuple[str, str] | None = None):
        """The :class:`~dinolab.eval.features.Embeddings` of split ``name`` (``--name`` or ``--name-embeddings``).

        ``flags`` names the two options in messages when they are not ``--name`` / ``--name-embeddings``.
        """
        from ..data.badfiles import warnings_held_back
        from ..errors import ConfigError, DataError
        from ..eval.features import Embeddings, embed

        folder, npz = getattr(self.args, name), getattr(self.args, f"{name}_embeddings")
        flag, npz_flag = flags or (f"--{name.replace('_', '-')}", f"--{name.replace('_', '-')}-embeddings")
        if bool(folder) == bool(npz):
            raise ConfigError(f"give exactly one of {flag} DIR or {npz_flag} FILE.npz")
        if npz:
            emb = Embeddings.load(npz)
            where = f"{npz_flag} {npz}"
            if patch_mean and emb.patch_mean is None:
                raise DataError(f"{where} has no patch_mean; re-create it with `dinolab embed ... --patch-mean`")
            if n_last_blocks != 1:
                print(f"note: {where} is used as saved; --n-last-blocks applies only to image folders")
        else:
            from ..data import ImageDataset

            model = self.model()  # first, so that missing WEIGHTS is reported before scanning folders
            try:
                dataset = ImageDataset(folder, labels=True if labels else None)
            except DataError as e:
                raise DataError(f"{flag} {folder}: {e}") from None
            if len(dataset) == 0:
                raise DataError(f"{flag} {folder} holds no images; point it at a folder of images")
            with warnings_held_back():  # named below, every one
                emb = embed(model, dataset, preprocess=self.preprocess, n_last_blocks=n_last_blocks,
                            patch_mean=patch_mean, **self.options.embed_kwargs(),
                            max_bad_fraction=getattr(self.args, "max_bad_fraction", None),
                            limit_name="--max-bad-fraction")
            where = f"{flag} {folder}"
            if emb.bad:
                print(bad_files_report(where, emb.bad))
        if len(emb) == 0:
            raise DataError(f"{where} holds no embeddings (0 images); embed a folder that contains images")
        if labels and emb.labels is None:
            raise DataError(f"{where} has no labels; use a class-per-subfolder folder (DIR/<class>/<image>) "
                            "or embeddings made from one")
        return emb


def bad_files_report(where: str, bad: Sequence[tuple[str, str]], limit: int = 50) -> str:
    """``WHERE: skipped N unreadable files:`` then one ``  path (reason)`` line per file (``limit`` at most)."""
    noun = "file" if len(bad) == 1 else "files"
    lines = [f"{where}: skipped {len(bad)} unreadable {noun}:"] + [f"  {p} ({r})" for p, r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (`dinolab embed` writes the full list to a log file)")
    return "\n".join(lines)


def features(emb, patch_mean: bool = False):
    """CLS features, with the mean patch token appended when ``patch_mean``: ``(N, D')`` float32."""
    import numpy as np

    return np.concatenate([emb.cls, emb.patch_mean], axis=1) if patch_mean else emb.cls


def align_labels(reference, other, what: str, *, allow_missing: bool = False):
    """``other``'s labels re-indexed to ``reference``'s class names (classes matched by name).

    A class of ``other`` that ``reference`` lacks is an error, or with ``allow_missing`` gets label -1
    (it can never match; retrieval queries without positives).
    """
    import numpy as np

    from ..errors import DataError

    if reference.classes is None or other.classes is None or reference.classes == other.classes:
        return other.labels
    index = {c: i for i, c in enumerate(reference.classes)}
    missing = [c for c in other.classes if c not in index]
    if missing and not allow_missing:
        raise DataError(f"{what} has classes the reference set lacks: {', '.join(missing[:5])}"
                        f"{' ...' if len(missing) > 5 else ''}; add images of them there or remove them")
    mapping = np.array([index.get(c, -1) for c in other.classes], dtype=np.int64)
    return mapping[other.labels]


def pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [title] if title else []
    lines += [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def per_class_table(per_class: dict, title: str = "per class") -> str:
    rows = [(c, v["support"], pct(v["recall"]), pct(v.get("f1"))) for c, v in per_class.items()]
    return table(["class", "support", "recall %", "F1 %"], rows, title)


def check_out(args: argparse.Namespace) -> None:
    """Refuse an existing ``--out`` before any work unless ``--force``."""
    if args.out:
        from ..io import check_writable

        check_writable(args.out, force=args.force)


def write_json(args: argparse.Namespace, payload: dict) -> None:
    if not args.out:
        return
    from ..io import atomic_save_text

    atomic_save_text(args.out, json.dumps(_jsonable(payload), indent=2) + "\n")
    print(f"results written to {args.out}")


def add_save_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--save", metavar="C.safetensors",
                        help=f"also save {what} for `dinolab predict` (safetensors + JSON record; the backbone is "
                             "referenced by path and fingerprint, not copied)")


def check_save(args: argparse.Namespace) -> None:
    """Refuse an existing ``--save`` file before any work unless ``--force``."""
    if getattr(args, "save", None):
        from ..io import check_writable

        check_writable(args.save, force=args.force)


def save_classifier_from(args: argparse.Namespace, splits: SplitLoader, reference, kind: str, tensors: dict,
                         params: dict, num_classes: int, n_last_blocks: int = 1, patch_mean: bool = False,
                         unit_parts: bool = False) -> None:
    """Write ``--save`` (when given): the classifier on ``reference``'s features, with its backbone and preprocess."""
    if not getattr(args, "save", None):
        return
    from ..predict.saved import SavedClassifier, backbone_record, save_classifier

    classes = reference.classes or [str(i) for i in range(num_classes)]
    model = splits._model
    backbone = backbone_record(model, args.weights) if model is not None else {"path": None, "fingerprint": None}
    feature = {"n_last_blocks": n_last_blocks, "patch_mean": patch_mean,
               **({"unit_parts": True} if unit_parts else {}),
               "dim": int(next(iter(v.shape[1] for k, v in tensors.items() if v.ndim == 2)))}
    pp = splits.preprocess.to_dict() if splits.preprocess is not None else None
    save_classifier(args.save, SavedClassifier(kind, classes, tensors, params, feature, backbone, pp))
    note = "" if model is not None else " (from precomputed embeddings: `dinolab predict` will need --weights)"
    print(f"{kind} classifier saved to {args.save}{note}")
