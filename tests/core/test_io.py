import errno
from pathlib import Path

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


def test_check_writable_refuses_a_place_it_cannot_write_before_any_work(tmp_path):
    # issue 22 item 11: --out under a file gave a raw NotADirectoryError after the whole computation
    (tmp_path / "file").write_text("x")
    with pytest.raises(DinolabError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub" / "e.npz")
    (tmp_path / "adir").mkdir()
    with pytest.raises(DinolabError, match="is a folder"):
        check_writable(tmp_path / "adir", force=True)
    assert check_writable(tmp_path / "new" / "deeper" / "e.npz") == tmp_path / "new" / "deeper" / "e.npz"


def test_check_writable_refuses_a_read_only_folder(tmp_path, monkeypatch):
    # root ignores permission bits, so the access check is simulated for the one folder
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    with pytest.raises(DinolabError, match="not writable"):
        check_writable(tmp_path / "x.json")


def test_atomic_write_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DinolabError, match="cannot write"):
        with atomic_write(tmp_path / "file" / "out.txt", "w") as f:
            f.write("never")
    assert (tmp_path / "file").read_text() == "x"


def test_embed_with_out_under_a_file_stops_before_embedding(tmp_path, capsys):
    from dinolab.cli import main

    (tmp_path / "file").write_text("x")
    rc = main(["embed", str(tmp_path / "no_weights_needed_yet"), "builtin:digits",
               "--out", str(tmp_path / "file" / "e.npz")])
    assert rc == 2 and "is a file, not a folder" in capsys.readouterr().err


def test_a_writer_that_wraps_the_full_disk_error_is_reported_as_one(tmp_path):
    # torch.save's zip writer turns ENOSPC into RuntimeError("... unexpected pos ...") (issue 21)
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"previous")
    with pytest.raises(DinolabError, match=r"no space left .*checkpoint.pt.*free there.*intact"):
        with atomic_write(target) as f:
            f.write(b"x" * 1000)
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    d = tmp_path / "tiny"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)


def test_torch_save_on_a_really_full_disk_keeps_the_previous_checkpoint(tiny_disk):
    import torch

    target = tiny_disk / "checkpoint.pt"
    with atomic_write(target) as f:
        torch.save({"w": torch.ones(1000)}, f)  # ~4 KB: fits
    with pytest.raises(DinolabError, match=r"no space left .*checkpoint.pt.*MB free there"):
        with atomic_write(target) as f:
            torch.save({"w": torch.ones(100_000)}, f)  # ~400 KB: does not
    assert torch.load(target, weights_only=True)["w"].shape == (1000,)
    assert [p.name for p in tiny_disk.iterdir()] == ["checkpoint.pt"]  # the partial file is gone
