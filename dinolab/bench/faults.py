"""Crash and fault matrix of the commands that write a run directory (issue 21 item 3).

Each :class:`FaultTarget` says how to start a tiny run of one command (``dinolab train``, ``dinolab align``,
...) and how to resume it. The attacks are real processes of the console command, as a user's would be:

- :func:`kill_loop`: ``kill -9`` at random moments (each after the run made progress since its last
  restart, plus a random delay), ``--resume`` each time, until ``kills`` kills have landed;
- :func:`stop_then_resume`: SIGTERM or Ctrl-C (SIGINT) mid-run: the run saves, exits 128 + signal;
- :func:`full_disk`: the run folder on a tmpfs too small for a second checkpoint;
- :func:`read_only`: the run folder inside a read-only mount;
- :func:`two_processes`: a second process on a running run's folder;
- :func:`corrupt_latest`: the latest checkpoint overwritten with garbage before the resume.

Every attack that lets the run go on compares its logged losses with those of an uninterrupted run
(:func:`reference`): they must be identical, each step logged once. The mounts need root (``mount -t
tmpfs``); where mounting is refused the attack reports that it did not run. ``bench/bench_faults.py``
runs the whole matrix; ``tests/runtime/test_faults.py`` runs a few kills of each target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..runtime.metrics_log import read_metrics

_CHECKOUT = str(Path(__file__).resolve().parents[2])  # the children run this copy of dinolab
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([_CHECKOUT, *filter(None, [os.environ.get("PYTHONPATH")])])}
TINY_TRAIN = [
    "model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "data.source=builtin:shapes?n=40&size=16", "data.val_fraction=0.2", "crops.global_crops_size=16",
    "crops.local_crops_size=8", "crops.local_crops_number=2", "dino.out_dim=64", "dino.head_hidden_dim=32",
    "dino.head_bottleneck_dim=16", "train.batch_size=8", "train.progress=false", "train.device=cpu",
    "train.precision=fp32", "optim.warmup_epochs=1", "teacher.warmup_teacher_temp_epochs=1", "eval.knn_every=-1",
    "data.num_workers=0",
]


@dataclass(frozen=True)
class FaultTarget:
    """How to run one command tiny: ``start(run, assets)`` / ``resume(run, assets)`` give the argv after
    ``dinolab``; ``prepare(assets)`` makes what it reads (weights, data) once."""

    name: str
    start: Callable[[Path, Path], list[str]]
    resume: Callable[[Path, Path], list[str]]
    checkpoint: str = "checkpoint.pt"
    prepare: Callable[[Path], None] = field(default=lambda assets: None)

    def records(self, run: Path) -> list[tuple[int, float]]:
        """``(step, loss)`` of every logged step record of ``run`` (empty before the first)."""
        log = run / "metrics.jsonl"
        if not log.exists():
            return []
        return [(int(r["step"]), float(r["loss"])) for r in read_metrics(log) if "loss" in r and "step" in r]


def _tiny_backbone(assets: Path) -> None:
    import dinolab

    if not (assets / "backbone.safetensors").exists():
        dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1),
                           assets / "backbone.safetensors")


_ALIGN = ["--pairs", "builtin:shapes?n=16&size=16", "--epochs", "24", "--batch-size", "8", "--embed-dim", "16",
          "--text-width", "16", "--text-depth", "1", "--head-hidden-dim", "32", "--image-size", "16",
          "--device", "cpu", "--precision", "fp32", "--no-progress", "--num-workers", "0"]

_FINETUNE = ["epochs=24", "batch_size=8", "patience=0", "--mode", "last:1", "--image-size", "16", "--device", "cpu",
             "--precision", "fp32", "--no-progress", "--num-workers", "0"]

_SEGMENT = ["--images", "builtin:shapes?n=8&size=16", "--steps", "60", "--checkpoint-every", "5", "--image-size", "16",
            "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--no-progress"]

TARGETS: dict[str, FaultTarget] = {
    "train": FaultTarget(
        "train",
        start=lambda run, assets: ["train", *TINY_TRAIN, "train.epoch_length=5", "train.epochs=8",
                                   "train.checkpoint_every=2", "--out", str(run)],
        resume=lambda run, assets: ["train", "--resume", str(run)]),
    "align": FaultTarget(
        "align",
        start=lambda run, assets: ["align", "--weights", str(assets / "backbone.safetensors"), *_ALIGN,
                                   "--out", str(run)],
        resume=lambda run, assets: ["align", "--resume", "--out", str(run), "--no-progress"],
        prepare=_tiny_backbone),
    "finetune": FaultTarget(
        "finetune",
        start=lambda run, assets: ["finetune", str(assets / "backbone.safetensors"), "builtin:shapes?n=40&size=16",
                                   *_FINETUNE, "--out", str(run)],
        resume=lambda run, assets: ["finetune", "--resume", "--out", str(run), "--no-progress"],
        prepare=_tiny_backbone),
    "segment": FaultTarget(
        "segment",
        start=lambda run, assets: ["segment", "fit", str(assets / "backbone.safetensors"), *_SEGMENT, "--out", str(run)],
        resume=lambda run, assets: ["segment", "fit", "--resume", "--out", str(run), "--no-progress"],
        prepare=_tiny_backbone),
}


@dataclass
class Outcome:
    """One cell of the matrix: the attack on the target, whether dinolab behaved as promised, what was seen."""

    target: str
    attack: str
    passed: bool | None  # None: could not be run here (say why in detail)
    detail: str
    kills: int = 0


def launch(target: FaultTarget, argv: list[str], logs: Path) -> subprocess.Popen:
    """Start ``dinolab ARGV`` with stdout / stderr appended to ``logs/<target>.out|err``."""
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{target.name}.out", "ab")  # noqa: SIM115 - the child keeps them for its life
    err = open(logs / f"{target.name}.err", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "dinolab", *argv], stdout=out, stderr=err, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    return proc.wait(timeout=timeout)


def run_to_end(target: FaultTarget, argv: list[str], logs: Path) -> tuple[int, str]:
    """Run to the end; ``(exit code, stderr text)``."""
    r = subprocess.run([sys.executable, "-m", "dinolab", *argv], capture_output=True, env=ENV, timeout=600)
    (logs / f"{target.name}.err").parent.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{target.name}.err", "ab") as f:
        f.write(r.stderr)
    return r.returncode, r.stderr.decode("utf-8", "replace")


def wait_for_progress(target: FaultTarget, proc: subprocess.Popen, run: Path, past: int,
                      timeout: float = 300) -> bool:
    """Wait until ``run`` has logged a step after ``past``; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        steps = [s for s, _ in target.records(run)]
        if steps and steps[-1] > past:
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.name} made no progress in {timeout:.0f} s")
        time.sleep(0.002)
    return False


def reference(target: FaultTarget, root: Path) -> list[tuple[int, float]]:
    """The logged losses of an uninterrupted run (made once per ``root``)."""
    run = root / f"{target.name}-reference"
    if not (run / "metrics.jsonl").exists():
        code, err = run_to_end(target, target.start(run, root / "assets"), root / "logs")
        if code != 0:
            raise RuntimeError(f"the uninterrupted {target.name} run failed ({code}): {err[-2000:]}")
    return target.records(run)


def same_as_reference(target: FaultTarget, run: Path, root: Path) -> tuple[bool, str]:
    got, want = target.records(run), reference(target, root)
    steps = [s for s, _ in got]
    if steps != sorted(set(steps)):
        return False, f"steps logged out of order or twice: {steps}"
    if got != want:
        differ = next((a, b) for a, b in zip(got + [None] * len(want), want + [None] * len(got)) if a != b)
        return False, f"{len(got)} records vs {len(want)} uninterrupted; first difference {differ}"
    return True, f"{len(got)} step records identical to the uninterrupted run"


def kill_loop(target: FaultTarget, root: Path, kills: int = 20, *, seed: int = 0,
              max_delay: float = 0.3) -> Outcome:
    """``kill -9`` the run ``kills`` times at random moments, resuming after each; then compare."""
    rng, landed, rounds = np.random.default_rng(seed), 0, 0
    while landed < kills:
        run, rounds = root / f"{target.name}-killed-{rounds}", rounds + 1
        proc = launch(target, target.start(run, root / "assets"), root / "logs")
        while True:
            past = max((s for s, _ in target.records(run)), default=0)
            if wait_for_progress(target, proc, run, past) and landed < kills:
                time.sleep(float(rng.uniform(0.0, max_delay)))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    landed += 1
                    proc = launch(target, target.resume(run, root / "assets"), root / "logs")
                    continue
            if finish(proc) != 0:
                return Outcome(target.name, "kill -9 loop", False, f"exit {proc.returncode} in round {rounds}", landed)
            ok, detail = same_as_reference(target, run, root)
            if not ok:
                return Outcome(target.name, "kill -9 loop", False, f"round {rounds}: {detail}", landed)
            break
    return Outcome(target.name, "kill -9 loop", True, f"{landed} kills in {rounds} run(s); {detail}", landed)


def stop_then_resume(target: FaultTarget, root: Path, sig: signal.Signals) -> Outcome:
    """SIGTERM / SIGINT after some progress: exit 128 + signal with a checkpoint, then resume to the end."""
    name = "Ctrl-C" if sig == signal.SIGINT else sig.name
    run = root / f"{target.name}-{sig.name.lower()}"
    proc = launch(target, target.start(run, root / "assets"), root / "logs")
    wait_for_progress(target, proc, run, 2)
    proc.send_signal(sig)
    code = finish(proc)
    if code != 128 + int(sig) or not (run / target.checkpoint).exists():
        return Outcome(target.name, name, False, f"exit {code} (want {128 + int(sig)}), checkpoint "
                                                 f"{'present' if (run / target.checkpoint).exists() else 'missing'}")
    code, err = run_to_end(target, target.resume(run, root / "assets"), root / "logs")
    ok, detail = same_as_reference(target, run, root) if code == 0 else (False, f"resume exit {code}: {err[-300:]}")
    return Outcome(target.name, name, ok, f"exit {128 + int(sig)} with a checkpoint; resumed: {detail}")


@contextlib.contextmanager
def tmpfs(where: Path, size_bytes: int, *, read_only: bool = False) -> Iterator[Path | None]:
    """A tmpfs of ``size_bytes`` mounted at ``where`` (None if this machine refuses the mount)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={max(size_bytes, 4096)}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _one_error_line(err: str, command: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"dinolab {command}: error:")]
    return lines[0] if len(lines) == 1 and "Traceback" not in err else None


def full_disk(target: FaultTarget, root: Path) -> Outcome:
    """The run folder on a tmpfs with room for one checkpoint and a half: the second write fails."""
    size = (root / f"{target.name}-reference" / target.checkpoint).stat().st_size
    with tmpfs(root / f"{target.name}-fulldisk", int(size * 1.6) + 64 * 1024) as mount:
        if mount is None:
            return Outcome(target.name, "full disk", None, "not run: mounting a tmpfs needs root here")
        run = mount / "run"
        code, err = run_to_end(target, target.start(run, root / "assets"), root / "logs")
        line = _one_error_line(err, target.name)
        left = sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) if run.exists() else []
        if code != 2 or line is None or left:
            return Outcome(target.name, "full disk", False, f"exit {code}; error line {line!r}; left {left}")
        shutil.copytree(run, root / f"{target.name}-fulldisk-moved")
    moved = root / f"{target.name}-fulldisk-moved"
    code, err2 = run_to_end(target, target.resume(moved, root / "assets"), root / "logs")
    ok, detail = same_as_reference(target, moved, root) if code == 0 else (False, f"resume exit {code}: {err2[-300:]}")
    return Outcome(target.name, "full disk", ok, f"{line.split(': error: ', 1)[1][:160]} | moved to a larger "
                                                 f"disk and resumed: {detail}")


def read_only(target: FaultTarget, root: Path) -> Outcome:
    """``--out`` inside a read-only mount: one clear line, nothing written."""
    with tmpfs(root / f"{target.name}-readonly", 1 << 20, read_only=True) as mount:
        if mount is None:
            return Outcome(target.name, "read-only output folder", None, "not run: mounting needs root here")
        code, err = run_to_end(target, target.start(mount / "run", root / "assets"), root / "logs")
        line = _one_error_line(err, target.name)
        ok = code == 2 and line is not None and not (mount / "run").exists()
        return Outcome(target.name, "read-only output folder", ok, f"exit {code}: {line or err[-300:]}")


def two_processes(target: FaultTarget, root: Path) -> Outcome:
    """A second process resuming a running run: refused by the lock, naming the holder; the first goes on."""
    run = root / f"{target.name}-two"
    first = launch(target, target.start(run, root / "assets"), root / "logs")
    wait_for_progress(target, first, run, 1)
    while first.poll() is None and not (run / target.checkpoint).exists():  # a resume needs a checkpoint
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)  # paused, still holding the lock: a tiny run would end before the second starts
    try:
        code, err = run_to_end(target, target.resume(run, root / "assets"), root / "logs")
    finally:
        first.send_signal(signal.SIGCONT)
    line = _one_error_line(err, target.name)
    holder_named = line is not None and str(first.pid) in line
    first_code = finish(first)
    ok, detail = same_as_reference(target, run, root) if first_code == 0 else (False, f"first exit {first_code}")
    passed = code == 2 and holder_named and ok
    return Outcome(target.name, "two processes on one run", passed, f"second: exit {code}: {line}; first: {detail}")


def corrupt_latest(target: FaultTarget, root: Path) -> Outcome:
    """Kill after two checkpoints, overwrite the latest with garbage, resume: the previous one is used."""
    run = root / f"{target.name}-corrupt"
    proc = launch(target, target.start(run, root / "assets"), root / "logs")
    while proc.poll() is None and not (run / target.checkpoint.replace(".pt", ".prev.pt")).exists():
        time.sleep(0.005)
    if proc.poll() is not None and not (run / target.checkpoint).exists():
        return Outcome(target.name, "corrupted latest checkpoint", False, f"the run ended ({proc.returncode}) unsaved")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run / target.checkpoint).write_bytes(b"\x00garbage" * 64)
    code, err = run_to_end(target, target.resume(run, root / "assets"), root / "logs")
    said = "prev" in err and str(target.checkpoint) in err
    ok, detail = same_as_reference(target, run, root) if code == 0 else (False, f"resume exit {code}: {err[-300:]}")
    return Outcome(target.name, "corrupted latest checkpoint", ok and said,
                   f"fallback {'announced' if said else 'NOT announced'}; {detail}")


def matrix(target: FaultTarget, root: Path, *, kills: int = 20, seed: int = 0) -> list[Outcome]:
    """Every attack on ``target``; ``root`` is a scratch folder (kept for inspection)."""
    (root / "assets").mkdir(parents=True, exist_ok=True)
    target.prepare(root / "assets")
    reference(target, root)
    return [kill_loop(target, root, kills, seed=seed), stop_then_resume(target, root, signal.SIGTERM),
            stop_then_resume(target, root, signal.SIGINT), full_disk(target, root), read_only(target, root),
            two_processes(target, root), corrupt_latest(target, root)]
