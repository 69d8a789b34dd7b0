"""Exact resume: N steps straight == k steps + resume + N-k steps, at an epoch end and mid-epoch,
across passes over the data; the metrics log then has every step exactly once."""

from __future__ import annotations

import pytest
import torch

from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.trainer import Trainer

# 32 training images, batch 8: a pass over the data is 4 steps, an epoch 3, the run 6 (pass and
# epoch boundaries fall at different steps); 2 micro-batches of 4 per step.
CONFIG = ("train.epochs=2", "train.epoch_length=3", "train.accumulate=2", "model.drop_path_rate=0.1")
N = 6


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


def _stop_after(trainer: Trainer, k: int) -> None:
    trainer.on_loss = lambda it, loss: (trainer.request_stop() if it == k - 1 else None) or loss


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny):
    run = tmp_path_factory.mktemp("straight")
    result = Trainer(tiny(*CONFIG), run).fit()
    assert result.iterations == N and result.stopped_by is None
    return run


@pytest.mark.parametrize("k", [3, 5])  # 3: end of epoch 1, mid-pass; 5: mid-epoch, in the second pass
def test_resume_continues_the_same_trajectory(tiny, tmp_path, straight, k):
    first = Trainer(tiny(*CONFIG), tmp_path)
    _stop_after(first, k)
    result = first.fit()
    assert result.stopped_by == "request" and result.iterations == k
    assert load_checkpoint(tmp_path)["iteration"] == k

    resumed = Trainer.from_run(tmp_path)
    assert resumed.fit().iterations == N
    expected, got = _losses(straight), _losses(tmp_path)
    assert sorted(got) == list(range(1, N + 1))  # every step once: no gap, no duplicate
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r] == list(range(1, N + 1))
    for step in range(1, N + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    a, b = load_checkpoint(straight), load_checkpoint(tmp_path)
    for name, tensor in a["teacher"].items():
        torch.testing.assert_close(b["teacher"][name], tensor, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b["objectives"]["0.loss.center"], a["objectives"]["0.loss.center"])


def test_resume_after_a_crash_drops_log_lines_past_the_checkpoint(tiny, tmp_path):
    first = Trainer(tiny(*CONFIG, "train.checkpoint_every=2"), tmp_path)
    _stop_after(first, 3)
    first.fit()
    # simulate kill -9 after step 5 was logged but before any newer checkpoint: append fake lines
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 123.0}\n{"step": 5, "loss": 456.0}\n{"step": 6, "lo')
    resumed = Trainer.from_run(tmp_path)
    assert resumed.setup() == 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in records) == 3


def test_resume_refuses_a_changed_model(tiny, tmp_path):
    from dinolab.errors import DinolabError

    first = Trainer(tiny(*CONFIG), tmp_path)
    _stop_after(first, 1)
    first.fit()
    with pytest.raises(DinolabError, match="does not match the config"):
        Trainer.from_run(tmp_path, ["dino.out_dim=32"]).setup()
