import csv
import hashlib
import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.curate.verify import PixelVerifier
from dinolab.eval.features import Embeddings


def _pool(tmp_path, n=60, d=32, seed=0):
    """Embeddings with planted duplicates: 1 and 2 copy 0, 11 copies 10; paths are fake names."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    for src, dst in [(0, 1), (0, 2), (10, 11)]:
        x[dst] = x[src] + 0.05 * rng.normal(size=d)
    paths = [f"img{i:03d}.jpg" for i in range(n)]
    Embeddings(paths, x).save(tmp_path / "pool.npz")
    return x, paths


def _lines(p):
    return p.read_text().splitlines()


def test_dedup_writes_lists_and_groups(tmp_path, capsys):
    x, paths = _pool(tmp_path)
    out = tmp_path / "out"
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(out), "--k", "8"]) == 0
    removed = _lines(out / "removed.txt")
    assert removed == ["img001.jpg", "img002.jpg", "img011.jpg"]
    assert _lines(out / "kept.txt") == [p for p in paths if p not in removed]
    doc = json.loads((out / "groups.json").read_text())
    assert doc["threshold"] == 0.9 and doc["n_removed"] == 3
    assert [g["kept"] for g in doc["groups"]] == ["img000.jpg", "img010.jpg"]
    assert [m["status"] for m in doc["groups"][0]["members"]] == ["kept", "duplicate", "duplicate"]
    rows = list(csv.DictReader((out / "groups.csv").open()))
    assert [(r["group"], r["path"], r["status"]) for r in rows] == [
        ("0", "img000.jpg", "kept"), ("0", "img001.jpg", "duplicate"), ("0", "img002.jpg", "duplicate"),
        ("1", "img010.jpg", "kept"), ("1", "img011.jpg", "duplicate")]
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert float(rows[1]["similarity"]) == pytest.approx(float(u[0] @ u[1]), abs=1e-3)
    assert "2 duplicate group(s)" in capsys.readouterr().out


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    _pool(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("mine\n")
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "kept.txt").read_text() == "mine\n"
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(out), "--force"]) == 0
    assert (out / "kept.txt").read_text() != "mine\n"


def test_against_removes_test_set_leaks_and_sscd_space_uses_lvd_thresholds(tmp_path):
    x, paths = _pool(tmp_path)
    Embeddings(["test_a.jpg", "test_b.jpg"], np.stack([x[2], -x[30]])).save(tmp_path / "eval.npz")
    out = tmp_path / "out"
    assert main(["dedup", str(tmp_path / "pool.npz"), "--against", str(tmp_path / "eval.npz"), "--out", str(out)]) == 0
    # test_a is a copy of img002 (so close to its near-duplicates 0 and 1 too): the group goes;
    # 11 is a duplicate of 10
    assert _lines(out / "removed.txt") == ["img000.jpg", "img001.jpg", "img002.jpg", "img011.jpg"]
    doc = json.loads((out / "groups.json").read_text())
    assert [(leak["path"], leak["eval_path"]) for leak in doc["leaks"]] == [(f"img00{i}.jpg", "test_a.jpg") for i in range(3)]
    assert doc["leaks"][2]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert doc["against_threshold"] == 0.8 and doc["groups"][0]["kept"] is None
    assert main(["dedup", str(tmp_path / "pool.npz"), "--space", "sscd", "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "groups.json").read_text())["threshold"] == 0.6


def test_image_folder_is_embedded_and_left_untouched(tmp_path, make_image):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=16, img_size=32, depth=2), weights)
    images = tmp_path / "images"
    for i in range(6):
        make_image(images / f"im{i}.png", (40, 32), seed=i)
    (images / "im3_copy.png").write_bytes((images / "im3.png").read_bytes())
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images.iterdir()}
    out = tmp_path / "out"
    code = main(["dedup", str(images), "--weights", str(weights), "--out", str(out), "--image-size", "32",
                 "--device", "cpu", "--precision", "fp32", "--keep", "first"])
    assert code == 0
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images.iterdir()}
    assert after == before
    emb = Embeddings.load(out / "embeddings.npz")
    assert len(emb.paths) == 7
    groups = json.loads((out / "groups.json").read_text())["groups"]
    # identical files give identical embeddings: the copy is grouped with its original
    assert any({m["path"].rsplit("/", 1)[-1] for m in g["members"]} >= {"im3.png", "im3_copy.png"} for g in groups)
    assert str(images / "im3_copy.png") in _lines(out / "removed.txt")


def test_images_without_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert main(["dedup", str(tmp_path / "images"), "--out", str(tmp_path / "out")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_low_detail_rule_is_a_flag(tmp_path):
    # two different drawings of one digit, upscaled: a low-detail pair whose pixels align well but not
    # as well as a copy's; their embeddings are made identical so only the verification decides
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    zeros = np.flatnonzero(d.target == 0)[:12]
    paths = []
    for i in zeros:
        paths.append(str(tmp_path / f"d{i}.png"))
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BILINEAR).save(paths[-1])
    raw = PixelVerifier(low_detail_min_score=0.5)  # below min_score: the plain NCC
    pairs = np.array([[0, j] for j in range(1, len(paths))])
    ncc = raw.scores(paths, pairs, progress=False)
    j = int(pairs[np.argmax(ncc), 1])
    assert 0.75 <= ncc.max() < 0.98  # aligns like a copy under the plain rule, not under the low-detail one
    x = np.random.default_rng(0).normal(size=(len(paths), 16)).astype(np.float32)
    x[j] = x[0]
    Embeddings(paths, x).save(tmp_path / "pool.npz")
    common = ["dedup", str(tmp_path / "pool.npz"), "--k", "4", "--verify", "on"]
    assert main(common + ["--out", str(tmp_path / "strict")]) == 0
    assert _lines(tmp_path / "strict" / "removed.txt") == []
    assert main(common + ["--out", str(tmp_path / "plain"), "--verify-low-detail-min-score", "0.75"]) == 0
    removed = _lines(tmp_path / "plain" / "removed.txt")
    assert len(removed) == 1 and removed[0] in (paths[0], paths[j])
