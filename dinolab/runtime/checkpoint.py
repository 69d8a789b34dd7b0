"""Training checkpoints that survive crashes and never run code when read.

:func:`save_checkpoint` writes the new ``checkpoint.pt`` through :func:`dinolab.io.atomic_write`
(temporary file, fsync, rename); once it is complete the old one is renamed to ``checkpoint.prev.pt``
and the new one takes its place. ``kill -9`` at any moment, a full disk or an exception during
``torch.save`` leaves the last good checkpoint in place, and from the second save on two complete,
separate checkpoint files exist at every instant (for an instant between the two renames only the
previous one: :func:`load_checkpoint` then uses it). The price: three checkpoints on disk while one is
written.

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


_VERIFIED: dict[str, tuple[int, int, int]] = {}  # real path -> (inode, size, mtime) of a file read or written whole


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _mark_verified(path: Path) -> None:
    with contextlib.suppress(OSError):
        _VERIFIED[os.path.realpath(path)] = _signature(path)


def _is_verified(path: Path) -> bool:
    """Whether ``path`` is, unchanged, a checkpoint this process read or wrote successfully (else it is read now)."""
    try:
        if _VERIFIED.get(os.path.realpath(path)) == _signature(path):
            return True
    except OSError:
        return False
    try:
        _read(path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not kept
        return False
    return True


def move_aside(path: Path) -> Path:
    """Rename a damaged run file (or a folder in its place) to ``NAME.damaged[.N]``, keeping it for inspection."""
    target, n = path.with_name(path.name + ".damaged"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.damaged.{n}"), n + 1
    os.replace(path, target)
    logger.warning("%s could not be used; it was moved to %s", path, target)
    return target


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/checkpoint.pt`` atomically, keeping the previous one as ``checkpoint.prev.pt``.

    The old ``checkpoint.pt`` becomes ``checkpoint.prev.pt`` only if it was read (or written) whole: a damaged
    latest checkpoint is replaced without taking the place of the good previous one.
    """
    run_dir = Path(run_dir)
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    keep = None
    if path.is_dir():  # cannot be replaced by a file: keep it aside
        move_aside(path)
    elif path.exists():
        if _is_verified(path):
            keep = previous
        else:
            logger.warning("%s is damaged; it is replaced and %s (readable) is kept as the previous checkpoint",
                           path, previous)
    state = dict(state, format_version=FORMAT_VERSION)
    with atomic_write(path, "wb", keep_previous=keep) as f:
        torch.save(state, f)
    if keep is not None:
        _mark_verified(previous)
    _mark_verified(path)
    return path


def _read(path: Path) -> dict[str, Any]:
    """The checkpoint in ``path``; :class:`Unreadable` says why it cannot be used."""
    if path.is_dir():
        raise Unreadable(f"{path} is a folder, not a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or "not a tensor file"
        raise Unreadable(f"{path} cannot be read as a tensor checkpoint ({detail}): it is damaged, or holds objects "
                         f"other than tensors and plain containers, which were not loaded because unpickling them "
                         f"could run code. Resume only from checkpoints written by dinolab") from None
    except Exception as e:  # noqa: BLE001 - truncated, zeroed, random bytes, unreadable: all the same to a resume
        raise Unreadable(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise Unreadable(f"{path} is not a dinolab training checkpoint (no 'iteration' entry)")
    it = state["iteration"]
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise Unreadable(f"{path} is not a valid dinolab checkpoint (iteration={it!r}, expected a count >= 0)")
    return state


class Unreadable(DinolabError):
    """A checkpoint file that cannot be used; the message says why."""


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a checkpoint (complete or not) to resume from."""
    return (Path(run_dir) / CHECKPOINT).exists() or (Path(run_dir) / PREVIOUS).exists()


def resume_state(run_dir: str | os.PathLike, unit: str = "step") -> dict[str, Any] | None:
    """What ``--resume`` continues from: :func:`load_checkpoint`, or None (said) for a run whose start was
    accepted but that was killed before its first checkpoint: it starts again at ``unit`` 0."""
    if not has_checkpoint(run_dir):
        from .messages import say

        say(f"{run_dir} has no checkpoint yet (the run stopped before saving one): starting at {unit} 0")
        return None
    return load_checkpoint(run_dir)


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state saved in ``run_dir``: ``checkpoint.pt``, or ``checkpoint.prev.pt`` (saying why) if the former
    cannot be used; both unusable: one error naming both."""
    run_dir = Path(run_dir)
    path, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    if not path.exists() and not previous.exists():
        raise DinolabError(f"no checkpoint in {run_dir} (expected {CHECKPOINT}); resume needs the run directory of a "
                           f"run that saved at least one checkpoint")
    try:
        state = _read(path) if path.exists() else None
        if state is not None:
            _mark_verified(path)
            return state
        why = f"{path} is missing"
    except Unreadable as e:
        why = str(e)
    if not previous.exists():
        raise DinolabError(f"{why}, and there is no {PREVIOUS} to fall back to; start a new run (--force)") from None
    try:
        state = _read(previous)
    except Unreadable as e:
        raise DinolabError(f"neither checkpoint of {run_dir} can be used: {why}; and {e}. Start a new run (--force) "
                           f"or restore a copy of the run directory") from None
    _mark_verified(previous)
    logger.warning("%s; resuming from %s (iteration %d)", why, previous, state["iteration"])
    return state


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
