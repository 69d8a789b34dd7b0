import csv

import numpy as np
import pytest

from dinolab.cli import main
from dinolab.eval.features import Embeddings


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


def _lines(p):
    return p.read_text().splitlines()


def test_seed_retrieval_writes_the_selection(tmp_path, capsys):
    pool_deg = [0, 10, 25, 90, 100, 130, 180]
    Embeddings([f"p{d}.jpg" for d in pool_deg], _circle(pool_deg)).save(tmp_path / "pool.npz")
    Embeddings(["s3.jpg", "s97.jpg"], _circle([3, 97])).save(tmp_path / "seeds.npz")
    out = tmp_path / "out"
    assert main(["curate", "--pool", str(tmp_path / "pool.npz"), "--seeds", str(tmp_path / "seeds.npz"),
                 "--k", "2", "--out", str(out)]) == 0
    assert _lines(out / "selected.txt") == ["p0.jpg", "p10.jpg", "p90.jpg", "p100.jpg"]
    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert [(r["path"], r["seed"]) for r in rows] == [("p0.jpg", "s3.jpg"), ("p10.jpg", "s3.jpg"),
                                                      ("p90.jpg", "s97.jpg"), ("p100.jpg", "s97.jpg")]
    assert float(rows[0]["similarity"]) == pytest.approx(np.cos(np.deg2rad(3)), abs=1e-4)
    assert "selected 4 of 7" in capsys.readouterr().out
    # outputs exist now: refused without --force, replaced with it
    args = ["curate", "--pool", str(tmp_path / "pool.npz"), "--seeds", str(tmp_path / "seeds.npz"), "--k", "1",
            "--out", str(out)]
    assert main(args) == 2
    assert len(_lines(out / "selected.txt")) == 4
    assert main(args + ["--force"]) == 0
    assert _lines(out / "selected.txt") == ["p0.jpg", "p100.jpg"]


def test_balanced_sampling_and_reusing_the_clustering(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [1500, 300, 60, 20]
    centres = rng.normal(size=(4, 8)) * 10
    x = np.concatenate([c + rng.normal(size=(s, 8)) for c, s in zip(centres, sizes)]).astype(np.float32)
    np.save(tmp_path / "pool.npy", x)
    out = tmp_path / "out"
    assert main(["curate", "--pool", str(tmp_path / "pool.npy"), "--balanced", "--target", "80",
                 "--clusters", "16,4", "--levels", "2", "--resamples", "2", "--out", str(out)]) == 0
    chosen = np.array([int(p) for p in _lines(out / "selected.txt")])
    assert len(chosen) == len(set(chosen)) == 80
    truth = np.repeat(np.arange(4), sizes)
    counts = np.bincount(truth[chosen], minlength=4)
    assert counts.min() >= 15  # the pool's 1500:20 imbalance is gone
    rows = list(csv.DictReader((out / "selection.csv").open()))
    assert list(rows[0]) == ["index", "path", "cluster_level1", "cluster_level2"]
    assert (out / "clustering.npz").is_file()
    again = tmp_path / "again"
    assert main(["curate", "--pool", str(tmp_path / "pool.npy"), "--balanced", "--target", "40",
                 "--clustering", str(out / "clustering.npz"), "--out", str(again)]) == 0
    assert len(_lines(again / "selected.txt")) == 40


def test_cluster_retrieval(tmp_path):
    rng = np.random.default_rng(1)
    centres = _circle([0, 120, 240])
    pool = np.concatenate([c + 0.05 * rng.normal(size=(30, 2)) for c in centres]).astype(np.float32)
    seeds = (centres[1] + 0.05 * rng.normal(size=(6, 2))).astype(np.float32)
    np.save(tmp_path / "pool.npy", pool)
    Embeddings([f"s{i}" for i in range(6)], seeds).save(tmp_path / "seeds.npz")
    out = tmp_path / "out"
    assert main(["curate", "--pool", str(tmp_path / "pool.npy"), "--seeds", str(tmp_path / "seeds.npz"),
                 "--clusters", "3", "--per-cluster", "12", "--out", str(out)]) == 0
    chosen = [int(p) for p in _lines(out / "selected.txt")]
    assert len(chosen) == 12 and all(30 <= i < 60 for i in chosen)


@pytest.mark.parametrize("extra, message", [
    ([], "either --seeds"),
    (["--balanced"], "--target"),
    (["--balanced", "--target", "5"], "--clusters"),
    (["--balanced", "--target", "5", "--clusters", "4,2", "--levels", "3"], "--levels 3"),
    (["--balanced", "--target", "5", "--clusters", "4,x"], "whole numbers"),
])
def test_bad_options_are_explained(tmp_path, capsys, extra, message):
    np.save(tmp_path / "pool.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    assert main(["curate", "--pool", str(tmp_path / "pool.npy"), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_seed_retrieval_dedup_can_verify_pixels(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    blobs = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC)
             for _ in range(2)]  # smooth random pictures
    paths = [str(tmp_path / n) for n in ("a.png", "a_copy.png", "b.png")]
    blobs[0].save(paths[0])
    blobs[0].resize((60, 60), Image.BICUBIC).save(paths[1])
    blobs[1].save(paths[2])
    # one embedding for all three: by the embeddings alone they are all duplicates of each other
    Embeddings(paths, _circle([0, 0, 0])).save(tmp_path / "pool.npz")
    Embeddings(["s.jpg"], _circle([1])).save(tmp_path / "seeds.npz")
    base = ["curate", "--pool", str(tmp_path / "pool.npz"), "--seeds", str(tmp_path / "seeds.npz"), "--k", "3",
            "--dedup-threshold", "0.9"]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    assert _lines(tmp_path / "plain" / "selected.txt") == [paths[0]]
    assert main(base + ["--dedup-verify", "--out", str(tmp_path / "verified")]) == 0
    assert _lines(tmp_path / "verified" / "selected.txt") == [paths[0], paths[2]]  # b is another picture
    assert main(base[:-2] + ["--dedup-verify", "--out", str(tmp_path / "x")]) == 2
    assert "--dedup-threshold" in capsys.readouterr().err
