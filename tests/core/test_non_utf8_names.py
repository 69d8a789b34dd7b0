"""File names that are not valid UTF-8 round-trip through every output that lists paths (issue 21).

Linux allows any bytes in a name; Python decodes them to lone surrogates (``os.fsdecode``). Writing
such a string strictly as UTF-8 crashed ``dinolab embed`` and ``dinolab dedup`` after all their work.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dinolab import create_model, save_model
from dinolab.data import ImageDataset
from dinolab.eval.features import Embeddings

GOOD = os.fsdecode(b"caf\xe9-good.png")  # latin-1 e-acute: not UTF-8
BAD = os.fsdecode(b"\xff-broken.png")


def _dinolab(*args):
    # in a subprocess, as a user runs it: pytest-xdist cannot carry such names in captured output
    return subprocess.run([sys.executable, "-m", "dinolab", *map(str, args)], capture_output=True, timeout=300)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ["a.png", "b.png", "c.png", GOOD]:
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(os.path.join(d, name))
    with open(os.path.join(d, BAD), "wb") as f:
        f.write(b"not an image")
    weights = save_model(create_model("vit_tiny", patch_size=8, img_size=16, depth=1), tmp_path / "m")
    return d, weights


def test_embed_lists_and_logs_such_names_as_their_own_bytes(folder, tmp_path):
    d, weights = folder
    out = tmp_path / "e.npz"
    r = _dinolab("embed", weights, d, "--out", out, "--image-size", "16", "--max-bad-fraction", "0.5",
                 "--num-workers", "0")
    assert r.returncode == 0, r.stderr
    assert os.fsencode(BAD) in r.stdout + r.stderr  # the summary names the file as it is on disk
    e = Embeddings.load(out)
    assert os.path.join(d, GOOD) in e.paths and all(os.path.exists(p) for p in e.paths)
    assert [p for p, _ in e.bad] == [os.path.join(d, BAD)]
    log = (tmp_path / "e.bad_files.log").read_bytes()
    assert os.fsencode(os.path.join(d, BAD)) + b"\t" in log  # the real name, byte for byte


def test_dedup_lists_round_trip_to_the_same_files(folder, tmp_path):
    d, weights = folder
    out = tmp_path / "dd"
    r = _dinolab("dedup", d, "--weights", weights, "--out", out, "--image-size", "16", "--verify", "off")
    assert r.returncode == 0, r.stderr
    kept = (out / "kept.txt").read_bytes().splitlines()
    assert os.fsencode(os.path.join(d, GOOD)) in kept
    assert all(os.path.exists(k) for k in kept)


def test_a_file_list_with_such_a_name_reads_it_back(folder, tmp_path):
    d, _ = folder
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(os.path.join(d, GOOD)) + b"\n" + os.fsencode(os.path.join(d, "a.png")) + b"\n")
    ds = ImageDataset(listing)
    assert ds.paths[0] == os.path.join(d, GOOD) and ds.load(0).shape == (3, 16, 16)


def test_a_binary_file_list_is_still_refused(tmp_path):
    from dinolab.errors import DataError

    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\x00\x01binary\xff")
    with pytest.raises(DataError, match="not UTF-8 text"):
        ImageDataset(listing)


def test_predict_csv_and_bad_file_log_keep_such_names(folder, tmp_path):
    d, weights = folder
    clf, out = tmp_path / "c.safetensors", tmp_path / "p.csv"
    opts = ["--image-size", "16", "--num-workers", "0", "--device", "cpu", "--no-progress"]
    r = _dinolab("knn", weights, "--train", "builtin:shapes?n=10&size=16", "--val", "builtin:shapes?n=10&size=16",
                 "--k", "3", "--save", clf, *opts)
    assert r.returncode == 0, r.stderr
    r = _dinolab("predict", clf, d, "--out", out, "--max-bad-fraction", "0.5", *opts)
    assert r.returncode == 0, r.stderr
    rows = [line.split(b",")[0] for line in out.read_bytes().splitlines()[1:]]
    assert os.fsencode(os.path.join(d, GOOD)) in rows and all(os.path.exists(p) for p in rows)
    assert os.fsencode(os.path.join(d, BAD)) + b"\t" in (tmp_path / "p.bad_files.log").read_bytes()
