"""``kill -9`` at random moments, ``--resume`` each time: the run ends where an uninterrupted one
does, with every step logged exactly once and the same losses (exact resume).

The runs are real ``dinolab train`` processes. A kill lands at a seeded-random step and a
seeded-random moment inside it: in the forward/backward pass, while the metrics line is written,
or while a checkpoint is written (a checkpoint every 2 steps, plus one at each epoch end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dinolab.runtime.checkpoint import CHECKPOINT, PREVIOUS, load_checkpoint
from dinolab.runtime.metrics_log import read_metrics

from .conftest import TINY

# 32 training images, batch 8: 4 batches per pass; epochs of 5 steps; 25 steps in all.
TOTAL = 25
OVERRIDES = [*TINY, "train.epoch_length=5", "train.epochs=5", "train.checkpoint_every=2"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _train(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dinolab", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def _kill_at(proc: subprocess.Popen, run: Path, step: int, delay: float, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``metrics.jsonl`` shows ``step``; False if it ended first."""
    deadline = time.monotonic() + timeout
    log, size = run / "metrics.jsonl", -1
    while proc.poll() is None:
        assert time.monotonic() < deadline, "training made no progress"
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size = now
            if _steps(run) and _steps(run)[-1] >= step:
                time.sleep(delay)
                break
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    reference = _train(*OVERRIDES, "--out", str(straight))  # runs while the killed one starts

    rng = np.random.default_rng(1234)
    run = tmp_path / "run"
    proc = _train(*OVERRIDES, "--out", str(run))
    kills = []
    for _ in range(3):
        # past every logged step, so the kill waits for this process's progress (a resumed process
        # first drops the lines past its checkpoint, then redoes those steps)
        target = max(_steps(run), default=0) + int(rng.integers(1, 6))
        delay = float(rng.uniform(0.0, 0.08))  # a tiny step takes ~15 ms, a checkpoint ~50 ms
        if _kill_at(proc, run, target, delay):
            kills.append(target)
            assert proc.returncode == -signal.SIGKILL
        proc = _train("--resume", str(run))
    code, out, err = _finish(proc)
    assert code == 0, err
    assert len(kills) == 3, f"a kill came too late (after the run ended): {kills}"
    assert f"run directory: {run} ({TOTAL} steps" in out

    code, _, err = _finish(reference)
    assert code == 0, err
    assert load_checkpoint(run)["iteration"] == load_checkpoint(straight)["iteration"] == TOTAL
    assert _steps(run) == list(range(1, TOTAL + 1))  # each step once, in order: no gap, no duplicate
    assert _losses(run) == _losses(straight)  # bit-identical: exact resume
    assert not [p.name for p in run.iterdir() if p.name.endswith("tmp")]  # no stale temporary files


# A child that dies by SIGKILL inside its N-th checkpoint write, with half of the file on disk.
_DIE_IN_SAVE = """
import os, signal, sys, torch
from dinolab.cli import main
calls, real_save = 0, torch.save
def save_then_die(obj, f, *args, **kwargs):
    global calls
    calls += 1
    real_save(obj, f, *args, **kwargs)
    if calls == int(os.environ["DIE_IN_SAVE"]):
        f.flush(); f.truncate(f.tell() // 2); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("die_in_save", [1, 3])  # 1: before any complete checkpoint; 3: with two behind it
def test_kill_inside_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path, die_in_save):
    run = tmp_path / "run"
    short = [*TINY, "train.epoch_length=3", "train.epochs=2", "train.checkpoint_every=1"]  # 6 steps, 6 saves
    child = subprocess.run([sys.executable, "-c", _DIE_IN_SAVE, "train", *short, "--out", str(run)],
                           capture_output=True, text=True, env={**ENV, "DIE_IN_SAVE": str(die_in_save)}, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert [p.name for p in run.glob(f".{CHECKPOINT}.*.tmp")]  # the torn temporary file is there...
    if die_in_save == 1:
        assert not (run / CHECKPOINT).exists() and not (run / PREVIOUS).exists()
    else:  # ...but checkpoint.pt is the last complete one
        assert load_checkpoint(run)["iteration"] == die_in_save - 1
    assert _steps(run) == list(range(1, die_in_save + 1))  # the step being saved was already logged

    code, out, err = _finish(_train("--resume", str(run)))
    assert code == 0, err
    start = die_in_save - 1
    assert (f"resuming {run} at step {start}" if start else f"{run} has no checkpoint yet") in err
    assert f"run directory: {run} (6 steps" in out
    assert _steps(run) == list(range(1, 7)) and load_checkpoint(run)["iteration"] == 6
    assert not [p.name for p in run.iterdir() if p.name.endswith("tmp")]
