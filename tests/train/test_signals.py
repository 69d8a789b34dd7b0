"""SIGTERM during training: the step finishes, a checkpoint is saved, the process exits cleanly (143)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics


def _start_and_wait(cmd, run, **popen):
    """Start ``cmd`` and return once it has logged two steps to ``run/metrics.jsonl``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)
    deadline = time.monotonic() + 240
    while len(read_metrics(run / "metrics.jsonl")) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"training did not start: {proc.communicate()}")
        time.sleep(0.2)
    return proc


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dinolab", "train", *tiny_overrides, "train.epochs=1000", "--out", str(run)]
    proc = _start_and_wait(cmd, run)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" in err and f"dinolab train --resume {run}" in out
    state = load_checkpoint(run)
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert state["iteration"] == steps[-1] >= 2  # the checkpoint holds every logged step


def test_ctrl_c_to_the_process_group_is_said_once_not_once_per_loader_worker(tmp_path, tiny_overrides):
    # issue 22 item 14: the terminal sends SIGINT to every process of the group, loader workers included
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dinolab", "train", *tiny_overrides, "train.epochs=1000", "data.num_workers=2",
           "--out", str(run)]
    proc = _start_and_wait(cmd, run, start_new_session=True)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert err.count("SIGINT received") == 1, err
    assert load_checkpoint(run)["iteration"] >= 2
