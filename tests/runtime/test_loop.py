"""The metrics log and stop signals every resumable loop except `dinolab train` opens (runtime/loop.py)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from dinolab.errors import DinolabError
from dinolab.runtime.loop import resumable_loop
from dinolab.runtime.metrics_log import read_metrics


def test_resumed_loop_keeps_the_log_up_to_its_step_and_appends(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
    with resumable_loop(tmp_path, 2, "dinolab align --resume --out RUN") as (metrics, stops):
        metrics.write({"step": 3, "loss": 0.5})
        assert stops.reason is None
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 1.0), (3, 0.5)]


def test_sigterm_inside_the_loop_is_a_reason_to_stop_and_the_handler_goes_with_it(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    said: list[str] = []
    with resumable_loop(tmp_path, 0, "x", said.append) as (_, stops):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.reason == "SIGTERM"
    assert said and "SIGTERM" in said[0]
    assert signal.getsignal(signal.SIGTERM) is before


def test_without_a_run_directory_nothing_is_written_and_ctrl_c_keeps_its_meaning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    with resumable_loop(None, 0, "x") as (metrics, stops):
        assert signal.getsignal(signal.SIGINT) is before  # no checkpoint to save: no handler
        metrics.write({"step": 1, "loss": 1.0})
    assert stops.reason is None and list(tmp_path.iterdir()) == []


def test_a_full_disk_names_the_command_that_continues_this_job(tmp_path, full_metrics_disk):
    with pytest.raises(DinolabError, match=r"no space left.*intact.*`dinolab segment fit --resume --out R`"):
        with resumable_loop(tmp_path, 0, "dinolab segment fit --resume --out R") as (metrics, _):
            metrics.write({"step": 1})
