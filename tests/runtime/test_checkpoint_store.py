"""Issue 22 items 3, 4, 8, 10: damaged run files never make a resume impossible or lose the good checkpoint."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from dinolab.errors import DinolabError
from dinolab.runtime import checkpoint as ckpt
from dinolab.runtime.metrics_log import MetricsLog, read_metrics


def _two_checkpoints(run):
    ckpt.save_checkpoint(run, {"iteration": 1, "w": torch.ones(3)})
    ckpt.save_checkpoint(run, {"iteration": 2, "w": torch.full((3,), 2.0)})


def _damage(path, kind, rng=None):
    if kind == "folder":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("x")
    elif kind == "negative_iteration":
        torch.save({"iteration": -5, "w": torch.ones(3)}, path)
    elif kind == "object":
        with open(path, "wb") as f:
            pickle.dump({"iteration": 3, "x": np.dtype("float32")}, f)  # a non-tensor object
    else:
        path.write_bytes(rng.bytes(4096))


@pytest.mark.parametrize("kind", ["folder", "negative_iteration", "object", *[f"random{i}" for i in range(8)]])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_and_says_why(tmp_path, kind, caplog):
    _two_checkpoints(tmp_path)
    _damage(tmp_path / ckpt.CHECKPOINT, kind, np.random.default_rng(abs(hash(kind)) % 2**32))
    with caplog.at_level("WARNING", logger="dinolab.runtime"):
        state = ckpt.load_checkpoint(tmp_path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert "checkpoint.pt" in caplog.text and "resuming from" in caplog.text and "checkpoint.prev.pt" in caplog.text


@pytest.mark.parametrize("kind", ["random0", "folder"])
def test_after_a_fallback_the_next_save_keeps_the_good_previous(tmp_path, kind):
    _two_checkpoints(tmp_path)
    _damage(tmp_path / ckpt.CHECKPOINT, kind, np.random.default_rng(0))
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1
    ckpt.save_checkpoint(tmp_path, {"iteration": 2, "w": torch.full((3,), 5.0)})
    # a kill -9 during the write after that must still find a readable checkpoint: the previous is the good one
    assert ckpt._read(tmp_path / ckpt.PREVIOUS)["iteration"] == 1
    (tmp_path / ckpt.CHECKPOINT).write_bytes(b"torn")
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1
    if kind == "folder":
        assert (tmp_path / "checkpoint.pt.damaged" / "x").read_text() == "x"  # kept aside, not deleted


def test_a_checkpoint_read_or_written_whole_is_kept_as_previous(tmp_path):
    _two_checkpoints(tmp_path)
    ckpt.save_checkpoint(tmp_path, {"iteration": 3})
    assert ckpt._read(tmp_path / ckpt.PREVIOUS)["iteration"] == 2


def test_both_checkpoints_damaged_is_one_clear_error_naming_both(tmp_path):
    _two_checkpoints(tmp_path)
    (tmp_path / ckpt.CHECKPOINT).write_bytes(b"\0" * 100)
    (tmp_path / ckpt.PREVIOUS).write_bytes(os.urandom(300))
    with pytest.raises(DinolabError, match=r"neither checkpoint of .* can be used: .*checkpoint.pt cannot be read.*"
                                           r"checkpoint.prev.pt cannot be read"):
        ckpt.load_checkpoint(tmp_path)


LINES = [b'{"step": 1, "loss": 1.0}', b'{"step": 2, "loss": \xff}', b"\xff\xfe", b'{"step": "abc"}',
         b'{"step": null}', b'{"step": -1}', b"[1, 2]", b'{"step": 3, "loss": 3.0}', b'{"step": 4, "lo']


def test_damaged_metrics_lines_are_skipped_and_truncation_works(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\n".join(LINES))
    assert [r["step"] for r in read_metrics(path)] == [1, 3]
    log = MetricsLog(path)
    log.truncate(2)
    log.write({"step": 3, "loss": 0.5})
    log.close()
    assert read_metrics(path) == [{"step": 1, "loss": 1.0}, {"step": 3, "loss": 0.5}]


def test_a_folder_in_place_of_metrics_is_kept_aside(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.mkdir()
    assert read_metrics(path) == []
    log = MetricsLog(path)
    log.truncate(5)
    log.write({"step": 6})
    log.close()
    assert read_metrics(path) == [{"step": 6}] and (tmp_path / "metrics.jsonl.damaged").is_dir()


def test_while_a_checkpoint_is_written_the_two_on_disk_are_separate_files(tmp_path, monkeypatch):
    """During the third save (a kill -9 could land there) the latest checkpoint is damaged in place: the
    previous one must still be readable. With ``checkpoint.prev.pt`` a hard link of ``checkpoint.pt`` (the
    old scheme) both names were one inode and the damage took both."""
    ckpt.save_checkpoint(tmp_path, {"iteration": 1})
    ckpt.save_checkpoint(tmp_path, {"iteration": 2})
    real_save = torch.save

    def damage_latest_then_die(obj, f, *args, **kwargs):
        assert not os.path.samefile(tmp_path / ckpt.CHECKPOINT, tmp_path / ckpt.PREVIOUS)
        with open(tmp_path / ckpt.CHECKPOINT, "r+b") as latest:  # in place, as a disk error would
            latest.write(b"\0" * 64)
        raise KeyboardInterrupt  # the process dies inside the write

    monkeypatch.setattr(torch, "save", damage_latest_then_die)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, {"iteration": 3})
    monkeypatch.setattr(torch, "save", real_save)
    ckpt._VERIFIED.clear()  # a new process
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_latest_between_the_two_renames_resumes_from_the_previous(tmp_path):
    ckpt.save_checkpoint(tmp_path, {"iteration": 1})
    ckpt.save_checkpoint(tmp_path, {"iteration": 2})
    os.replace(tmp_path / ckpt.CHECKPOINT, tmp_path / "moved")  # the instant after latest -> prev
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1


def test_resume_state_of_a_run_killed_before_its_first_checkpoint_is_none_and_said(tmp_path, capsys):
    assert ckpt.resume_state(tmp_path, "epoch") is None
    assert "has no checkpoint yet (the run stopped before saving one): starting at epoch 0" in capsys.readouterr().err


def test_resume_state_between_the_renames_of_a_save_uses_the_previous(tmp_path):
    """A kill between 'latest -> prev' and 'new -> latest' leaves only checkpoint.prev.pt (found by the finetune
    kill loop: its resume was refused as 'not a run directory (no checkpoint.pt)')."""
    ckpt.save_checkpoint(tmp_path, {"iteration": 1})
    ckpt.save_checkpoint(tmp_path, {"iteration": 2})
    os.replace(tmp_path / ckpt.CHECKPOINT, tmp_path / ckpt.PREVIOUS)
    assert ckpt.resume_state(tmp_path)["iteration"] == 2
