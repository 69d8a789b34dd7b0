"""A few cells of the crash and fault matrix (the full one, 20 kills per command, is bench/bench_faults.py):
``dinolab align`` killed with -9 twice and resumed logs the losses of an uninterrupted run; a second
process on a running align run is refused by the lock, naming the holder."""

from __future__ import annotations

import pytest

from dinolab.bench import faults


@pytest.fixture(scope="module")
def align_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "assets").mkdir()
    faults.TARGETS["align"].prepare(root / "assets")
    faults.reference(faults.TARGETS["align"], root)
    return root


@pytest.mark.slow
def test_align_killed_twice_resumes_to_the_uninterrupted_losses(align_root):
    outcome = faults.kill_loop(faults.TARGETS["align"], align_root, kills=2, seed=1)
    assert outcome.passed, outcome.detail
    assert outcome.kills == 2


@pytest.mark.slow
def test_a_second_align_process_on_a_running_run_is_refused(align_root):
    outcome = faults.two_processes(faults.TARGETS["align"], align_root)
    assert outcome.passed, outcome.detail
    assert "in use by another process" in outcome.detail


def test_align_killed_before_its_first_checkpoint_resumes_from_the_start(align_root):
    """Found by the 20-kill loop: a kill after the first metrics line but before the first checkpoint left a
    run that ``--resume`` refused ("not a run directory (no checkpoint.pt)")."""
    import signal

    target = faults.TARGETS["align"]
    run = align_root / "early"
    proc = faults.launch(target, target.start(run, align_root / "assets"), align_root / "logs")
    while proc.poll() is None and not (run / "config.yaml").exists():  # the start was accepted
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # as if it died before saving one
        (run / name).unlink(missing_ok=True)
    code, err = faults.run_to_end(target, target.resume(run, align_root / "assets"), align_root / "logs")
    assert code == 0, err
    assert "has no checkpoint yet (the run stopped before saving one): starting at epoch 0" in err
    assert faults.same_as_reference(target, run, align_root)[0]


@pytest.mark.slow
def test_segment_fit_resumes_from_its_run_folder_alone(tmp_path):
    """Found by the fault matrix: `dinolab segment fit --resume --out HEAD` without WEIGHTS was refused ("needs
    WEIGHTS and --images"): the absent positional replaced config.yaml's weights with None."""
    import signal

    target = faults.TARGETS["segment"]
    (tmp_path / "assets").mkdir()
    target.prepare(tmp_path / "assets")
    outcome = faults.stop_then_resume(target, tmp_path, signal.SIGTERM)
    assert outcome.passed, outcome.detail
