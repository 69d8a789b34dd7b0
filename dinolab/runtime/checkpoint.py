"""Training checkpoints that survive crashes and never run code when read.

:func:`save_checkpoint` keeps the last complete checkpoint as ``checkpoint.prev.pt`` (a hard link,
or a copy where links are not supported), then writes the new ``checkpoint.pt`` through
:func:`dinolab.io.atomic_write` (temporary file, fsync, rename). At every instant
``checkpoint.pt`` is a complete file, so ``kill -9`` at any moment, a full disk or an exception
during ``torch.save`` leaves the last good checkpoint in place.

A checkpoint holds only tensors and plain containers (dicts, lists, tuples, numbers, strings),
so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: a crafted pickle is
refused, never executed. Random-number-generator states are stored in that form too
(:func:`capture_rng_state`, :func:`restore_rng_state`).

Examples:
    >>> save_checkpoint("runs/x", {"iteration": 3, "student": model.state_dict()})  # doctest: +SKIP
    >>> load_checkpoint("runs/x")["iteration"]                                      # doctest: +SKIP
    3
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DinolabError
from ..io import atomic_write

logger = logging.getLogger("dinolab.runtime")

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT_VERSION = 1


def _keep_previous(current: Path, previous: Path) -> None:
    """Make ``previous`` a complete copy of ``current`` (atomically replacing an older one)."""
    tmp = previous.with_name(f".{previous.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(current, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(current, tmp)
    os.replace(tmp, previous)


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically, keeping the previous one as ``checkpoint.prev.pt``."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if path.exists():
        _keep_previous(path, run_dir / PREVIOUS)
    state = dict(state, format_version=FORMAT_VERSION)
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or "not a tensor file"
        raise DinolabError(f"{path} holds objects other than tensors and plain containers ({detail}), so it was not "
                           f"loaded: unpickling it could run code. Resume only from checkpoints written by "
                           f"dinolab train") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise DinolabError(f"{path} is not a dinolab training checkpoint (no 'iteration' entry)")
    return state


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a checkpoint (complete or not) to resume from."""
    return (Path(run_dir) / CHECKPOINT).exists() or (Path(run_dir) / PREVIOUS).exists()


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state saved in ``run_dir``: ``checkpoint.pt``, or ``checkpoint.prev.pt`` if the former is unreadable."""
    run_dir = Path(run_dir)
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not path.exists() and not previous.exists():
        raise DinolabError(f"no checkpoint in {run_dir} (expected {CHECKPOINT}); resume needs the run directory of a "
                           f"run that saved at least one checkpoint")
    try:
        return _read(path)
    except DinolabError:
        raise
    except Exception as e:  # truncated or damaged file: fall back to the previous complete one
        if not previous.exists():
            raise DinolabError(f"{path} cannot be read ({type(e).__name__}: {e}) and there is no {PREVIOUS} to fall "
                               f"back to; start a new run") from None
        logger.warning("%s cannot be read (%s: %s); resuming from %s", path, type(e).__name__, e, previous)
        return _read(previous)


# ------------------------------------------------------------------------------------------------
# random number generators


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """States of python ``random``, numpy, torch (CPU and CUDA) and the named ``generators``, as tensors/lists."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])
