"""Checkpoints: atomic replacement, the previous one kept, unsafe pickles refused, RNG states restored."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from dinolab.errors import DinolabError
from dinolab.runtime import checkpoint as ckpt


def test_save_keeps_the_previous_checkpoint(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"iteration": 1, "w": torch.ones(3)})
    ckpt.save_checkpoint(tmp_path, {"iteration": 2, "w": torch.full((3,), 2.0)})
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 2
    prev = torch.load(tmp_path / ckpt.PREVIOUS, weights_only=True)
    assert prev["iteration"] == 1 and prev["w"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.PREVIOUS, ckpt.CHECKPOINT]  # no temporary left


def test_a_failure_during_save_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, {"iteration": 5, "w": torch.ones(1000)})
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temporary file, then the disk "fails"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(DinolabError, match="no space left.*intact"):
        ckpt.save_checkpoint(tmp_path, {"iteration": 6, "w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)
    state = ckpt.load_checkpoint(tmp_path)
    assert state["iteration"] == 5 and state["w"].sum().item() == 1000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"iteration": 1})
    ckpt.save_checkpoint(tmp_path, {"iteration": 2})
    data = (tmp_path / ckpt.CHECKPOINT).read_bytes()
    (tmp_path / ckpt.CHECKPOINT).write_bytes(data[: len(data) // 2])  # e.g. a disk error after the fact
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / ckpt.CHECKPOINT, "wb") as f:
        pickle.dump({"iteration": 1, "x": Exploit()}, f)
    with pytest.raises(DinolabError, match="could run code"):
        ckpt.load_checkpoint(tmp_path)
    assert not marker.exists()


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(DinolabError, match="no checkpoint in"):
        ckpt.load_checkpoint(tmp_path)


def test_rng_states_survive_a_weights_only_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(2), torch.manual_seed(4)
    ckpt.save_checkpoint(tmp_path, {"iteration": 0, "rng": ckpt.capture_rng_state({"crops": g})})
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path)["rng"], {"crops": g})
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == expected
