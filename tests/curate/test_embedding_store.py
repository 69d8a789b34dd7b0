import numpy as np
import pytest

from dinolab.curate.store import EmbeddingStore, open_embeddings
from dinolab.errors import DataError


def _vectors(n=50, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_chunks_are_unit_rows_and_cover_everything():
    x = _vectors()
    x[7] = 0  # a zero row must stay zero, not become NaN
    store = EmbeddingStore(x)
    starts, chunks = zip(*store.iter_chunks(16))
    assert starts == (0, 16, 32, 48)
    got = np.concatenate(chunks)
    expected = x / np.maximum(np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True)), 1e-300)
    expected[7] = 0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(store.rows([9, 2, 40]), expected[[9, 2, 40]], rtol=1e-6)


def test_memory_mapped_npy_reads_like_in_memory(tmp_path):
    x = _vectors(100, 12).astype(np.float16)
    np.save(tmp_path / "emb.npy", x)
    (tmp_path / "emb.txt").write_text("".join(f"img_{i}.jpg\n" for i in range(100)))
    mm = open_embeddings(tmp_path / "emb.npy")
    assert isinstance(mm.array, np.memmap)
    assert mm.paths[3] == "img_3.jpg" and len(mm) == 100 and mm.dim == 12
    mem = EmbeddingStore(x.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([c for _, c in mm.iter_chunks(7)]), mem.to_array())


def test_npy_without_paths_names_rows_by_index(tmp_path):
    np.save(tmp_path / "a.npy", _vectors(5, 3))
    assert open_embeddings(tmp_path / "a.npy").paths == ["0", "1", "2", "3", "4"]
    names = tmp_path / "names.list"
    names.write_text("x\ny\nz\n")
    with pytest.raises(DataError, match="5 vectors but 3 paths"):
        open_embeddings(tmp_path / "a.npy", paths=names)


def test_npz_from_dinolab_embed(tmp_path):
    from dinolab.eval.features import Embeddings

    x = _vectors(6, 4)
    Embeddings([f"p{i}.png" for i in range(6)], x, patch_mean=2 * x).save(tmp_path / "e.npz")
    store = open_embeddings(tmp_path / "e.npz")
    assert store.paths == [f"p{i}.png" for i in range(6)]
    np.testing.assert_allclose(store.to_array()[2], x[2] / np.linalg.norm(x[2]), rtol=1e-6)
    assert open_embeddings(tmp_path / "e.npz", key="patch_mean").dim == 4


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="no such embeddings file"):
        open_embeddings(tmp_path / "missing.npz")
    np.save(tmp_path / "three_d.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DataError, match="2-D"):
        open_embeddings(tmp_path / "three_d.npy")
    np.save(tmp_path / "ints.npy", np.zeros((2, 3), np.int32))
    with pytest.raises(DataError, match="float"):
        open_embeddings(tmp_path / "ints.npy")
    np.save(tmp_path / "nan.npy", np.full((2, 3), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        open_embeddings(tmp_path / "nan.npy").to_array()
    (tmp_path / "e.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown embeddings format"):
        open_embeddings(tmp_path / "e.csv")
