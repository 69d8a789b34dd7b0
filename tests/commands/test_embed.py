import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings, embed


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dinolab.create_model("vit_tiny", patch_size=16, img_size=32, depth=2)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    dinolab.save_model(model, path)
    return path


def test_embed_a_folder_with_bad_files(weights, bad_image_corpus, tmp_path, capsys):
    corpus = bad_image_corpus(n_plain=36)  # 46 readable, 5 bad: under the default 10% limit
    out = tmp_path / "emb.npz"
    code = main(["embed", str(weights), str(corpus.root), "--out", str(out), "--image-size", "32",
                 "--batch-size", "16", "--num-workers", "0", "--device", "cpu", "--precision", "fp32",
                 "--patch-mean"])
    assert code == 0
    emb = Embeddings.load(out)
    assert sorted(emb.paths) == corpus.good
    assert sorted(p for p, _ in emb.bad) == corpus.bad
    assert emb.cls.shape == (len(corpus.good), 192) and emb.patch_mean.shape == (len(corpus.good), 192)
    # Same numbers as the Python API on the same weights.
    api = embed(dinolab.load_model(weights), corpus.root, image_size=32, device="cpu", precision="fp32",
                progress=False)
    np.testing.assert_allclose(emb.cls, api.cls, rtol=1e-5, atol=1e-6)

    printed = capsys.readouterr().out
    assert f"embedded {len(corpus.good)} of {len(corpus.good) + len(corpus.bad)} images" in printed
    assert "cls dimension 192" in printed
    assert f"skipped {len(corpus.bad)} unreadable files: {corpus.bad[0]}" in printed
    log = tmp_path / "emb.bad_files.log"
    assert f"full list in {log}" in printed
    assert sorted(line.split("\t")[0] for line in log.read_text().splitlines()) == corpus.bad


def test_class_folders_save_labels_and_outputs_are_not_overwritten(weights, image_folder, tmp_path, capsys):
    root = image_folder(classes=("cat", "dog"), per_class=2)
    out = tmp_path / "e.npz"
    args = ["embed", str(weights), str(root), "--out", str(out), "--image-size", "32", "--num-workers", "0",
            "--device", "cpu"]
    assert main(args) == 0
    emb = Embeddings.load(out)
    assert emb.classes == ["cat", "dog"] and emb.labels.tolist() == [0, 0, 1, 1] and emb.bad == []
    assert "2 classes" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(args + ["--force"]) == 0


def test_too_many_bad_files_is_a_clean_error(weights, bad_image_corpus, tmp_path, capsys):
    corpus = bad_image_corpus(n_plain=2)  # 5 of 17 files are bad
    code = main(["embed", str(weights), str(corpus.root), "--out", str(tmp_path / "e.npz"), "--image-size", "32",
                 "--num-workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "5 of 17 files" in err and "--max-bad-fraction=0.1" in err and "Traceback" not in err
    assert not (tmp_path / "e.npz").exists() and (tmp_path / "e.bad_files.log").exists()


def test_missing_data_is_a_clean_error(weights, tmp_path, capsys):
    code = main(["embed", str(weights), str(tmp_path / "nothing"), "--out", str(tmp_path / "e.npz")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
