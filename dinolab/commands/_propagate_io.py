"""Outputs of ``dinolab propagate``: per-frame palette masks, the overlay strip, J / F against ground truth.

Not a sub-command (the leading underscore keeps it out of ``dinolab --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

SCORES = "propagate_scores.json"
OVERLAY = "propagate_overlay.png"


def settings_check(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    for flag, value, lo in (("--n-last-frames", args.n_last_frames, 0), ("--radius", args.radius, 0),
                            ("--topk", args.topk, 1)):
        if value < lo:
            raise ConfigError(f"{flag} must be at least {lo}, got {value}")
    if not args.temperature > 0:
        raise ConfigError(f"--temperature must be positive, got {args.temperature}")
    if args.ground_truth and not os.path.isdir(args.ground_truth):
        raise ConfigError(f"--ground-truth {args.ground_truth} is not a folder; give the folder of true masks "
                          f"named like the frames")


def check_propagate_outputs(out: Path, frames, force: bool, scored: bool) -> None:
    """Refuse before any work when an output exists (a video's frame names are not known yet: any
    ``NNNNN.png`` in DIR counts)."""
    from ..errors import DataError
    from ._visual import check_outputs

    fixed = [out / OVERLAY] + ([out / SCORES] if scored else [])
    if frames.names is not None:
        check_outputs([out / f"{n}.png" for n in frames.names] + fixed, force)
        return
    check_outputs(fixed, force)
    taken = sorted(p.name for p in out.glob("[0-9][0-9][0-9][0-9][0-9].png")) if out.is_dir() else []
    if taken and not force:
        raise DataError(f"{out / taken[0]} exists (frames of a video are written as 00000.png, ...); "
                        f"use --force to overwrite, or another --out")


class FrameWriter:
    """``on_frame`` of :func:`dinolab.eval.video.segment_video`: writes each mask, keeps overlay tiles,
    scores the frame against ``ground_truth/<name>.png`` when given."""

    def __init__(self, out: Path, ground_truth: str | None, n_tiles: int, total: int | None):
        self.out, self.gt, self.n_tiles, self.total = out, ground_truth, n_tiles, total
        self.tiles: list[tuple[int, str, np.ndarray]] = []
        self.stride = 1 if total is None else max(1, (total - 1) // max(n_tiles - 1, 1))
        self.ours = self.copy = None  # VideoScores of the propagation and of the copy-the-first-mask baseline
        self.held: tuple[int, np.ndarray, np.ndarray] | None = None  # latest scored frame: scored unless the last
        self.n_scored = 0
        self.first_mask: np.ndarray | None = None
        self.count = 0

    def write(self, name: str, frame, mask: np.ndarray) -> None:
        from ..data.video import mask_png
        from ..io import atomic_save_bytes

        atomic_save_bytes(self.out / f"{name}.png", mask_png(mask))
        if self.first_mask is None:
            from ..eval.davis import VideoScores

            self.first_mask = mask
            objects = sorted(set(np.unique(mask).tolist()) - {0})
            self.ours, self.copy = VideoScores(objects), VideoScores(objects)
            self.void = None if 255 in objects else 255  # DAVIS's void label, unless 255 is one of the objects
        if self.count % self.stride == 0:
            self.tiles.append((self.count, name, _overlay(frame, mask)))
            if self.total is None and len(self.tiles) > 2 * self.n_tiles:  # a video of unknown length
                self.stride *= 2
                self.tiles = [t for t in self.tiles if t[0] % self.stride == 0]
        self._score(name, mask)
        self.count += 1

    def _score(self, name: str, mask: np.ndarray) -> None:
        from ..data.video import read_mask
        from ..errors import DataError

        if not self.gt or self.count == 0:
            return
        path = Path(self.gt) / f"{name}.png"
        if not path.is_file():
            return
        truth = read_mask(path)
        if truth.shape != mask.shape:
            raise DataError(f"ground truth {path} is {truth.shape[1]}x{truth.shape[0]} px, frame {name} "
                            f"{mask.shape[1]}x{mask.shape[0]}")
        self._add_held()
        self.held = (self.count, mask, truth)
        self.n_scored += 1

    def _add_held(self) -> None:
        if self.held is not None:
            _, pred, truth = self.held
            self.ours.add(pred, truth, self.void)
            self.copy.add(self.first_mask, truth, self.void)
            self.held = None

    def finish(self, res) -> None:
        from ..eval.viz import contact_sheet, save_png

        tiles = self.tiles[:: max(1, -(-len(self.tiles) // self.n_tiles))]
        if tiles:
            save_png(self.out / OVERLAY, contact_sheet([t for _, _, t in tiles], [n for _, n, _ in tiles],
                                                       columns=len(tiles), min_side=96))

    def scores(self) -> tuple[dict, dict]:
        """DAVIS summaries of the propagation and of the copy-the-first-mask baseline (the last frame left out)."""
        if self.held is not None and self.held[0] != self.count - 1:
            self._add_held()
        return self.ours.summary(), self.copy.summary()


def _overlay(frame, mask: np.ndarray) -> np.ndarray:
    """``uint8 H×W×3``: the frame with each object tinted in its palette colour, shrunk to at most 160 px."""
    from ..data.video import davis_palette
    from ..eval.viz import blend, to_hwc

    rgb = to_hwc(frame)
    tinted = np.where(mask[..., None] > 0, blend(rgb, davis_palette()[mask], 0.55), rgb)
    step = max(1, -(-max(rgb.shape[:2]) // 160))
    return np.ascontiguousarray(tinted[::step, ::step])


def print_scores(writer: FrameWriter, res, out: Path) -> None:
    from ..errors import DataError
    from ..io import atomic_save_text

    objects = res.object_ids[1:]
    if not writer.n_scored:
        raise DataError(f"no ground-truth mask in {writer.gt} is named like a frame after the first (e.g. "
                        f"{res.names[1] if len(res.names) > 1 else '00001'}.png); masks were written, nothing scored")
    ours, copy = writer.scores()
    if ours["J"] is None:
        print("only the first and last frames have ground truth: nothing scored (DAVIS leaves them out)",
              file=sys.stderr)
        return
    print(f"DAVIS scores over {ours['objects'][objects[0]]['frames']} frame(s) (first and last left out):")
    print(f"  {'object':<8} {'J':>6} {'F':>6} {'J&F':>6}   copy first mask: {'J':>6} {'F':>6} {'J&F':>6}")
    for k in objects:
        a, b = ours["objects"][k], copy["objects"][k]
        print(f"  {k:<8} {a['J']:6.3f} {a['F']:6.3f} {a['J&F']:6.3f}   {'':>16} {b['J']:6.3f} {b['F']:6.3f} {b['J&F']:6.3f}")
    print(f"  {'mean':<8} {ours['J']:6.3f} {ours['F']:6.3f} {ours['J&F']:6.3f}   {'':>16} {copy['J']:6.3f} "
          f"{copy['F']:6.3f} {copy['J&F']:6.3f}")
    record = {"frames": len(res.names), "work_size": list(res.work_size), "grid": list(res.grid),
              "propagation": _jsonable(ours), "copy_first_mask": _jsonable(copy)}
    atomic_save_text(out / SCORES, json.dumps(record, indent=2) + "\n")


def _jsonable(summary: dict) -> dict:
    return {**summary, "objects": {str(k): v for k, v in summary["objects"].items()}}
