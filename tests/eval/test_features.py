import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import dinolab
from dinolab.data import ImageDataset, make_loader
from dinolab.errors import DataError
from dinolab.eval.features import Embeddings, embed

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dinolab.create_model("vit_tiny", patch_size=16, img_size=32, depth=3)


def reference_tokens(model, images_uint8):
    """Normed outputs of every block, run block by block: list of (B, 1+R+N, D)."""
    x = (images_uint8.float() / 255.0 - MEAN) / STD
    with torch.no_grad():
        t, rope = model.prepare_tokens(x)
        outs = []
        for blk in model.blocks:
            t = blk(t, rope=rope)
            outs.append(model.norm(t))
    return outs


def eval_images(ds, size):
    batches = list(make_loader(ds, len(ds), resize_mode="eval", load_size=size))
    return torch.cat([b["images"] for b in batches])


def test_cls_patch_mean_and_last_blocks_match_a_block_by_block_reference(model):
    ds = ImageDataset("builtin:shapes?n=6&size=40")
    emb = embed(model, ds, batch_size=4, image_size=32, device="cpu", precision="fp32", patch_mean=True,
                n_last_blocks=2, progress=False)
    outs = reference_tokens(model, eval_images(ds, 32))
    p = model.num_prefix_tokens
    expected_cls = torch.cat([outs[-2][:, 0], outs[-1][:, 0]], dim=-1)
    np.testing.assert_allclose(emb.cls, expected_cls.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.patch_mean, outs[-1][:, p:].mean(dim=1).numpy(), rtol=1e-4, atol=1e-5)
    assert emb.cls.dtype == np.float32 and emb.cls.shape == (6, 2 * model.embed_dim)
    assert emb.paths == ds.paths and emb.labels.tolist() == ds.labels.tolist() and emb.classes == ds.classes


def test_default_feature_is_the_final_cls_and_model_mode_is_restored(model):
    model.train()
    emb = embed(model, "builtin:shapes?n=5&size=32", batch_size=2, image_size=32, device="cpu",
                precision="fp32", progress=False)
    assert model.training
    model.eval()
    with torch.no_grad():
        x = (eval_images(ImageDataset("builtin:shapes?n=5&size=32"), 32).float() / 255 - MEAN) / STD
        expected = model(x)
    np.testing.assert_allclose(emb.cls, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert emb.patch_mean is None


def test_bf16_is_close_to_fp32(model):
    kw = dict(image_size=32, device="cpu", progress=False)
    a = embed(model, "builtin:shapes?n=4&size=32", precision="fp32", **kw).cls
    b = embed(model, "builtin:shapes?n=4&size=32", precision="bf16", **kw).cls
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.98


def test_folder_with_bad_files_embeds_every_readable_image_and_names_the_rest(model, bad_image_corpus, caplog,
                                                                               tmp_path):
    corpus = bad_image_corpus(n_plain=6)
    with caplog.at_level(logging.WARNING, logger="dinolab.data"):
        emb = embed(model, corpus.root, batch_size=4, image_size=32, device="cpu", precision="fp32",
                    progress=False, bad_file_log=tmp_path / "bad.log")
    assert sorted(emb.paths) == corpus.good
    assert sorted(p for p, _ in emb.bad) == corpus.bad
    assert emb.cls.shape == (len(corpus.good), model.embed_dim) and np.isfinite(emb.cls).all()
    assert emb.labels is None
    assert len(caplog.records) == 1 and f"skipped {len(corpus.bad)} unreadable files" in caplog.text
    lines = (tmp_path / "bad.log").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == corpus.bad


def test_too_many_bad_files_stop_with_the_log_written(model, make_image, tmp_path):
    root = tmp_path / "imgs"
    make_image(root / "good.png", (20, 20))
    for i in range(3):
        (root / f"bad{i}.jpg").write_text("no")
    with pytest.raises(DataError, match="3 of 4 files .*max_bad_fraction=0.5"):
        embed(model, root, image_size=32, device="cpu", progress=False, max_bad_fraction=0.5,
              bad_file_log=tmp_path / "bad.log")
    assert len((tmp_path / "bad.log").read_text().splitlines()) == 3


def test_nothing_readable_is_an_error(model, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 1 images"):
        embed(model, tmp_path, image_size=32, device="cpu", progress=False)


def test_n_last_blocks_out_of_range(model):
    with pytest.raises(dinolab.errors.ConfigError, match="n_last_blocks=4"):
        embed(model, "builtin:shapes?n=2&size=32", n_last_blocks=4, progress=False)


def test_embeddings_round_trip_without_pickles(tmp_path):
    full = Embeddings(["a.jpg", "b/c.png"], np.arange(6, dtype=np.float32).reshape(2, 3),
                      np.ones((2, 3), np.float32), np.array([1, 0]), ["x", "y"], [("bad.jpg", "empty file")])
    full.save(tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:
        assert set(z.files) == {"paths", "cls", "patch_mean", "labels", "classes", "bad_paths", "bad_reasons"}
    back = Embeddings.load(tmp_path / "e.npz")
    assert back.paths == full.paths and back.classes == full.classes and back.bad == full.bad
    np.testing.assert_array_equal(back.cls, full.cls)
    np.testing.assert_array_equal(back.patch_mean, full.patch_mean)
    assert back.labels.dtype == np.int64 and back.labels.tolist() == [1, 0]

    bare = Embeddings(["a.jpg"], np.zeros((1, 2), np.float32))
    bare.save(tmp_path / "bare.npz")
    back = Embeddings.load(tmp_path / "bare.npz")
    assert back.patch_mean is None and back.labels is None and back.classes is None and back.bad == []


def test_loading_a_wrong_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Embeddings.load(tmp_path / "none.npz")
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="dinolab embed"):
        Embeddings.load(tmp_path / "x.npz")
    np.savez(tmp_path / "other.npz", features=np.zeros(3))
    with pytest.raises(DataError, match="without 'cls'"):
        Embeddings.load(tmp_path / "other.npz")


def test_top_level_embed_is_this_function():
    assert dinolab.embed is embed
    assert Path(dinolab.eval.features.__file__).name == "features.py"


@pytest.mark.parametrize("cls_array, message", [
    (np.array([["a", "b"], ["c", "d"]]), "float array"),
    (np.zeros((3, 4), np.float32), "one row per path"),
    (np.array([[0.0, np.nan], [1.0, 2.0]], np.float32), "NaN or infinite"),
])
def test_damaged_embedding_files_are_refused_by_name(tmp_path, cls_array, message):
    # issue 22 item 12: a string 'cls' array reached the k-NN as a raw TypeError
    from dinolab.errors import DataError
    from dinolab.eval.features import Embeddings

    path = tmp_path / "e.npz"
    np.savez(path, paths=np.array(["a.png", "b.png"]), cls=cls_array)
    with pytest.raises(DataError, match=message) as e:
        Embeddings.load(path)
    assert "'cls'" in str(e.value) and "e.npz" in str(e.value)
