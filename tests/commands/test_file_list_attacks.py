"""A .txt file list as an attacker or a careless user writes it (issue 21 item 2): entries climbing out with
``..``, absolute paths, missing files, a folder, a name that is not UTF-8.

Without ``--root`` the list is the user's own and every entry is resolved (relative ones against the
list's folder) and read; what cannot be read is named and skipped. With ``--root`` an entry outside
the root stops the command with one line naming the list, the line and the entry.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings

OPTS = ["--image-size", "16", "--device", "cpu", "--precision", "fp32", "--no-progress", "--num-workers", "0"]
LATIN1 = os.fsdecode(b"\xe9t\xe9.png")  # not UTF-8


@pytest.fixture
def hostile_list(tmp_path):
    images, lists = tmp_path / "imgs", tmp_path / "lists"
    images.mkdir()
    (lists / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["a.png", "b.png", "c.png", LATIN1]:
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(os.path.join(images, name))
    lines = ["../imgs/a.png", f"{images}/b.png", "missing.png", "sub", "/nonexistent/x.png", "../imgs/c.png",
             f"../imgs/{LATIN1}"]
    listing = lists / "images.txt"
    listing.write_text("".join(f"{line}\n" for line in lines), errors="surrogateescape")
    good = [str(lists / "../imgs/a.png"), f"{images}/b.png", str(lists / "../imgs/c.png"),
            os.path.join(lists, "../imgs", LATIN1)]
    bad = [str(lists / "missing.png"), str(lists / "sub"), "/nonexistent/x.png"]
    weights = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1), tmp_path / "m")
    return listing, good, bad, str(weights)


def test_embed_reads_every_entry_it_can_and_names_the_rest(hostile_list, tmp_path):
    listing, good, bad, weights = hostile_list
    out = tmp_path / "e.npz"
    assert main(["embed", weights, str(listing), "--out", str(out), "--max-bad-fraction", "0.5", *OPTS]) == 0
    e = Embeddings.load(out)
    assert sorted(e.paths) == sorted(good)
    assert sorted(p for p, _ in e.bad) == sorted(bad)
    log = (tmp_path / "e.bad_files.log").read_bytes()
    assert all(os.fsencode(p) in log for p in bad)


def test_embed_with_a_root_refuses_entries_outside_it(hostile_list, tmp_path, capsys):
    listing, _, _, weights = hostile_list
    out = tmp_path / "e.npz"
    code = main(["embed", weights, str(listing), "--out", str(out), "--root", str(listing.parent), *OPTS])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert f"{listing} line 1: '../imgs/a.png' points outside the root folder" in err


def test_dedup_on_the_list_names_the_unreadable_entries(hostile_list, tmp_path, capsys):
    listing, good, bad, weights = hostile_list
    out = tmp_path / "dd"
    assert main(["dedup", str(listing), "--weights", weights, "--out", str(out), "--verify", "off", *OPTS]) == 0
    said = "".join(capsys.readouterr())
    assert all(p in said for p in bad)
    kept = [os.fsdecode(line) for line in (out / "kept.txt").read_bytes().splitlines()]
    assert sorted(kept) == sorted(good)
