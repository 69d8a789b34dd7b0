"""How a command runs a model: :class:`InferenceOptions` and the one argparse group generated from it.

Every command that feeds images to a model declares its options with :func:`add_inference_arguments`
and reads them back with :meth:`InferenceOptions.from_args`, so ``--batch-size``, ``--image-size``,
``--device``, ``--precision``, ``--num-workers``, ``--mean`` / ``--std`` and ``--no-progress`` mean the
same everywhere. ``image_size``, ``mean`` and ``std`` default to None: the model's own preprocessing
(``model.preprocess``, see :mod:`dinolab.models.preprocess`) applies, and an option given wins.

Adding an option is one field with its ``metadata=_arg(...)``: the flag, help and parsing come from it.

Examples:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> group = add_inference_arguments(parser)
    >>> opts = InferenceOptions.from_args(parser.parse_args(["--image-size", "32", "--no-progress"]))
    >>> opts.image_size, opts.batch_size, opts.progress
    (32, 64, False)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import ConfigError


def _arg(help: str, *, metavar: str | None = None, type: Callable | None = None, nargs: int | None = None,
         choices: Sequence[str] | None = None, minimum: float | None = None, positive: bool = False) -> dict[str, Any]:
    """Field metadata: how the option appears on the command line and what values it accepts.

    E.g. ``runtime: str = field(default="torch", metadata=_arg("torch (default) or onnx", choices=("torch",
    "onnx")))`` gives ``--runtime {torch,onnx}`` in every command.
    """
    return {"help": help, "metavar": metavar, "type": type, "nargs": nargs, "choices": choices, "minimum": minimum,
            "positive": positive}


@dataclass
class InferenceOptions:
    """Options of every command that runs a model on images (see the module docstring)."""

    batch_size: int = field(default=64, metadata=_arg("images per batch (default 64)", metavar="B", type=int,
                                                      minimum=1))
    image_size: int | None = field(default=None, metadata=_arg(
        "side of the image fed to the model (default: the size the model records, e.g. the global crop size of "
        "a `dinolab train` export; 224 for official weights)", metavar="PX", type=int, minimum=1))
    mean: tuple[float, float, float] | None = field(default=None, metadata=_arg(
        "normalisation mean of the RGB channels in [0, 1] (default: the model's)", metavar="M", type=float,
        nargs=3))
    std: tuple[float, float, float] | None = field(default=None, metadata=_arg(
        "normalisation std of the RGB channels (default: the model's)", metavar="S", type=float, nargs=3,
        positive=True))
    device: str = field(default="auto", metadata=_arg("auto (default), cpu, cuda, cuda:N or mps"))
    precision: str = field(default="auto", metadata=_arg("auto (default), fp32, bf16 or fp16"))
    num_workers: int = field(default=2, metadata=_arg("decoding processes (default 2)", metavar="N", type=int,
                                                      minimum=0))
    progress: bool = field(default=True, metadata=_arg("no progress bars"))
    runtime: str = field(default="torch", metadata={**_arg(
        "torch (default), or onnx: WEIGHTS is a `dinolab export` .onnx file run by ONNX Runtime "
        "(CPU; --precision does not apply)",
        choices=("torch", "onnx")), "opt_in": True})  # only commands that embed through dinolab.embed

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            values = value if isinstance(value, (tuple, list)) else (value,)
            if meta.get("minimum") is not None and any(v < meta["minimum"] for v in values):
                raise ConfigError(f"{_flag(f)} must be at least {meta['minimum']}, got {value}")
            if meta.get("positive") and any(v <= 0 for v in values):
                raise ConfigError(f"{_flag(f)} values must be positive, got {value}")
            if meta.get("nargs") and len(values) != meta["nargs"]:
                raise ConfigError(f"{_flag(f)} takes {meta['nargs']} values, got {value}")
        if self.mean is not None:
            self.mean = tuple(self.mean)
        if self.std is not None:
            self.std = tuple(self.std)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> InferenceOptions:
        """The options parsed by :func:`add_inference_arguments` (absent ones keep their defaults)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})

    @classmethod
    def from_settings(cls, settings: Any, num_workers: int) -> InferenceOptions:
        """The options of a loop's config dataclass (``image_size``, ``mean``, ``std``, ``device``, ``precision``,
        ``progress`` fields), with ``num_workers`` decoding processes."""
        return cls(image_size=settings.image_size, mean=settings.mean, std=settings.std, device=settings.device,
                   precision=settings.precision, num_workers=num_workers, progress=settings.progress)

    def preprocess_for(self, model: Any, announce: str | None = None):
        """``model``'s :class:`~dinolab.models.Preprocess` with these options' overrides applied.

        With ``announce`` (the command's name) one line on stderr says what is used and where it comes from.
        """
        from ..models.preprocess import resolve_preprocess

        p = resolve_preprocess(model, image_size=self.image_size, mean=self.mean, std=self.std)
        if announce:
            print(f"{announce}: {p.describe()}", file=sys.stderr)
        return p

    def load_model(self, weights: Any) -> Any:
        """The model of ``weights`` for :attr:`runtime` (a dinolab backbone, or an ONNX Runtime session)."""
        from ..export.runtime import load_runtime_model

        return load_runtime_model(weights, self.runtime)

    def embed_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`dinolab.embed` (all but the preprocessing)."""
        return {"batch_size": self.batch_size, "device": self.device, "precision": self.precision,
                "num_workers": self.num_workers, "progress": self.progress}


def _flag(f: dataclasses.Field) -> str:
    if f.type in (bool, "bool") or isinstance(f.default, bool):
        return f"--no-{f.name.replace('_', '-')}" if f.default else f"--{f.name.replace('_', '-')}"
    return f"--{f.name.replace('_', '-')}"


def add_inference_arguments(parser: argparse.ArgumentParser, *, only: Sequence[str] | None = None,
                            title: str = "running the model", extra: Sequence[str] = ()) -> argparse._ArgumentGroup:
    """Add one option per :class:`InferenceOptions` field (or the fields named in ``only``) as a group;
    opt-in fields (``runtime``) only when named in ``extra``."""
    names = [f.name for f in dataclasses.fields(InferenceOptions)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown inference option(s) {unknown}; known: {names}")
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(InferenceOptions):
        if (only is not None and f.name not in only) or (f.metadata.get("opt_in") and f.name not in extra):
            continue
        meta = f.metadata
        if isinstance(f.default, bool):
            group.add_argument(_flag(f), dest=f.name, action="store_false" if f.default else "store_true",
                               help=meta["help"])
            continue
        kwargs = {k: meta[k] for k in ("metavar", "type", "nargs", "choices") if meta.get(k) is not None}
        group.add_argument(_flag(f), dest=f.name, default=f.default, help=meta["help"], **kwargs)
    return group
