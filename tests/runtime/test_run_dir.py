"""RunDirectory and RunLock: refusal to overwrite, one process per run, no trace of a refused or failed start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from dinolab.errors import DinolabError
from dinolab.runtime.run_dir import LOCK_NAME, RunDirectory, RunLock

FILES = ("config.yaml", "checkpoint.pt", "metrics.jsonl")

HOLD = """
import sys, time
from dinolab.runtime.run_dir import RunLock
RunLock(sys.argv[1]).acquire("holder")
print("locked", flush=True)
time.sleep(60)
"""


def test_new_run_refuses_files_unless_force_and_force_replaces_only_run_files(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DinolabError, match=r"already exists and holds files; continue that run with --resume"):
        RunDirectory(tmp_path, files=FILES).open(resume=False)
    run = RunDirectory(tmp_path, files=FILES)
    run.open(resume=False, force=True)
    assert (tmp_path / "metrics.jsonl").exists()  # nothing removed before the start is accepted
    run.commit("a: 1\n")
    run.close()
    assert not (tmp_path / "metrics.jsonl").exists() and (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"


def test_a_failed_start_leaves_nothing_so_the_rerun_needs_no_force(tmp_path):
    d = tmp_path / "new" / "run"
    run = RunDirectory(d, files=FILES)
    run.open(resume=False)
    run.abandon()  # e.g. the data source was missing
    assert not d.exists()
    again = RunDirectory(d, files=FILES)
    again.open(resume=False)  # no --force needed
    again.commit("a: 1\n")
    again.close()
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", LOCK_NAME]


def test_abandon_keeps_a_directory_it_did_not_make(tmp_path):
    run = RunDirectory(tmp_path, files=FILES)
    run.open(resume=False)
    run.abandon()
    assert tmp_path.is_dir()


def test_resume_needs_the_config_and_removes_partial_writes_only_on_commit(tmp_path):
    with pytest.raises(DinolabError, match=r"is not a run directory \(no config.yaml\)"):
        RunDirectory(tmp_path, files=FILES).open(resume=True)
    (tmp_path / "config.yaml").write_text("a: 1\n")
    partial = tmp_path / ".checkpoint.pt.abc.tmp"
    partial.write_bytes(b"half")
    run = RunDirectory(tmp_path, files=FILES)
    run.open(resume=True)
    assert partial.exists()
    run.commit(None)
    run.close()
    assert not partial.exists() and (tmp_path / "config.yaml").read_text() == "a: 1\n"


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DinolabError, match=rf"in use by another process \(pid {proc.pid} on "
                                               rf"{socket.gethostname()}"):
            RunLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait()
    lock = RunLock(tmp_path)  # the holder was killed: its lock is stale and taken over
    lock.acquire("me")
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != proc.pid
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_the_stale_lock_of_a_killed_process_is_taken_over_and_said(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with caplog.at_level("WARNING", logger="dinolab.runtime"):
        lock = RunLock(tmp_path)
        lock.acquire()
    assert f"taking over the lock of pid {int(dead.stdout)}" in caplog.text
    lock.release()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    a, b = RunLock(tmp_path), RunLock(tmp_path)
    a.acquire()
    b.acquire()
    a.release()
    b.release()
    start = time.monotonic()
    c = RunLock(tmp_path)
    c.acquire()  # released by both: free again
    assert time.monotonic() - start < 1
    c.release()


def test_a_run_directory_that_cannot_be_created_is_one_clear_error(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(DinolabError, match=r"cannot create the run directory .*run: Read-only file system"):
        RunDirectory(tmp_path / "run", files=FILES).open(resume=False)
