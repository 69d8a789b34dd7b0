"""Issue 22 items 1, 5, 14 at the trainer: a refused resume changes nothing, one process per run, a failed start
leaves nothing that forces --force, a finished run's resume does not claim an epoch past the last."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dinolab.errors import DataError, DinolabError
from dinolab.runtime.run_dir import LOCK_NAME
from dinolab.train.trainer import Trainer

HOLD = """
import sys, time
from dinolab.runtime.run_dir import RunLock
RunLock(sys.argv[1]).acquire("dinolab train --resume")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    run = tmp_path_factory.mktemp("finished")
    assert Trainer(tiny("train.epochs=1"), run).fit().iterations == 3
    return run


def _snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_NAME}


def test_a_refused_resume_changes_nothing_in_the_run(finished):
    before = _snapshot(finished)
    with pytest.raises(DinolabError, match="changed since the checkpoint"):
        Trainer.from_run(finished, ["train.batch_size=4"]).fit()  # 8 -> 4: another number of batches per pass
    assert _snapshot(finished) == before  # config.yaml included
    result = Trainer.from_run(finished).fit()  # the plain resume still works
    assert result.iterations == 3 and result.stopped_by is None


def test_resuming_a_finished_run_does_not_report_an_epoch_past_the_end(finished, capsys):
    Trainer.from_run(finished).fit()
    err = capsys.readouterr().err
    assert "already finished its 3 steps" in err and "epoch 2" not in err


def test_a_second_process_on_the_run_is_refused_naming_it(finished):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(finished)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "dinolab", "train", "--resume", str(finished)],
                              capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and f"in use by another process (pid {holder.pid}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_start_leaves_nothing_that_forces_force(tiny, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataError):
        Trainer(tiny("data.source=" + str(tmp_path / "missing")), run).setup()
    assert not run.exists()
    trainer = Trainer(tiny("train.epochs=1"), run)  # the corrected rerun, no --force
    assert trainer.setup() == 0 and (run / "config.yaml").is_file()
    trainer.run.close()
