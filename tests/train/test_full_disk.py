"""A disk that fills up mid-run: a clear error naming the file, the last checkpoint intact, resume to the end."""

from __future__ import annotations

import builtins
import errno

import pytest

from dinolab.errors import DinolabError
from dinolab.runtime import metrics_log
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.trainer import Trainer

CONFIG = ("train.epochs=2", "train.epoch_length=3", "train.checkpoint_every=1")


class _FillsUp:
    """A text file that accepts ``lines`` more lines, then fails as a full disk does (bytes half written)."""

    def __init__(self, f, lines: int):
        self.f, self.left = f, lines

    def write(self, text: str) -> int:
        if self.left == 0:
            self.f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= 1
        return self.f.write(text)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def test_full_disk_while_logging_stops_clearly_and_the_run_resumes(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_log, "open", lambda *a, **k: _FillsUp(builtins.open(*a, **k), 4), raising=False)
    with pytest.raises(DinolabError, match=r"no space left on the device while writing .*metrics.jsonl; the last "
                                           r"checkpoint in .* is intact.*dinolab train --resume"):
        Trainer(tiny(*CONFIG), tmp_path).fit()
    assert load_checkpoint(tmp_path)["iteration"] == 4  # steps 1-4 logged and saved; step 5 did not fit
    monkeypatch.undo()

    assert Trainer.from_run(tmp_path).fit().iterations == 6
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5, 6]
