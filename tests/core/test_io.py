import errno

import pytest

from dinolab.errors import DinolabError
from dinolab.io import atomic_save_text, atomic_write, check_writable


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half-written")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]  # no temporary file left behind
    atomic_save_text(target, "new")
    assert target.read_text() == "new"


def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("good")

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(DinolabError, match="no space left.*metrics.json.*intact"):
        atomic_save_text(target, "new content")
    assert target.read_text() == "good"
    assert len(list(tmp_path.iterdir())) == 1


def test_check_writable_refuses_existing_without_force(tmp_path):
    p = tmp_path / "out.npz"
    assert check_writable(p) == p
    p.write_bytes(b"x")
    with pytest.raises(DinolabError, match="--force"):
        check_writable(p)
    assert check_writable(p, force=True) == p


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_save_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
