import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import ImageDataset, ShardedSampler, make_loader, resize_eval, resize_train
from dinolab.data import loader as loader_mod


def collect(loader):
    batches = list(loader)
    return batches, torch.cat([b["indices"] for b in batches]).tolist(), [x for b in batches for x in b["bad"]]


def test_eval_resize_matches_pillow_resize_and_centre_crop():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    a = np.array(Image.fromarray(a).resize((90, 60), Image.Resampling.BOX))  # some structure
    # Reference: shorter side to round(32 * 256/224) = 37, longer side int(37 * 90/60) = 55, centre 32.
    ref = np.asarray(Image.fromarray(a).resize((55, 37), Image.Resampling.BICUBIC)).astype(int)
    top, left = int(round((37 - 32) / 2)), int(round((55 - 32) / 2))
    ref = ref[top:top + 32, left:left + 32]
    out = resize_eval(torch.from_numpy(a).permute(2, 0, 1), 32).permute(1, 2, 0).numpy().astype(int)
    assert out.shape == (32, 32, 3)
    assert np.abs(out - ref).mean() < 1.5


@pytest.mark.parametrize("hw, expected", [((30, 40), (20, 27)), ((60, 30), (40, 20)), ((200, 10), (40, 20)),
                                          ((1, 1), (20, 20)), ((1, 500), (20, 40))])
def test_train_resize_sizes(hw, expected):
    # shorter side -> 20; the longer side is first cut to at most 2x the shorter one.
    assert tuple(resize_train(torch.zeros(3, *hw, dtype=torch.uint8), 20, max_aspect=2.0).shape[1:]) == expected


def test_eval_resize_survives_extreme_aspect():
    assert resize_eval(torch.full((3, 1, 500), 7, dtype=torch.uint8), 16).shape == (3, 16, 16)


def test_train_batches_are_padded_top_left_with_valid_sizes(make_image, tmp_path):
    for name, size in [("a.png", (40, 30)), ("b.png", (30, 60)), ("c.png", (10, 200))]:  # (w, h)
        make_image(tmp_path / name, size, seed=len(name) + size[0])
    ds = ImageDataset(tmp_path)
    batch = next(iter(make_loader(ds, 3, resize_mode="train", load_size=20, max_aspect=2.0)))
    assert batch["sizes"].tolist() == [[20, 27], [40, 20], [40, 20]]
    assert batch["images"].shape == (3, 3, 40, 27) and batch["images"].dtype == torch.uint8
    assert batch["labels"].tolist() == [-1, -1, -1] and batch["indices"].tolist() == [0, 1, 2]
    for k, (h, w) in enumerate(batch["sizes"].tolist()):
        assert torch.equal(batch["images"][k, :, :h, :w], resize_train(ds.load(k), 20, 2.0))
        assert batch["images"][k, :, h:].eq(0).all() and batch["images"][k, :, :, w:].eq(0).all()


def test_eval_batches_have_fixed_size_and_labels(image_folder):
    ds = ImageDataset(image_folder(classes=("a", "b"), per_class=3))
    batches, order, bad = collect(make_loader(ds, 4, resize_mode="eval", load_size=16))
    assert [tuple(b["images"].shape) for b in batches] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    assert (torch.cat([b["sizes"] for b in batches]) == 16).all()
    assert order == list(range(6)) and bad == []
    assert torch.cat([b["labels"] for b in batches]).tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_files_are_dropped_and_reported_exactly(bad_image_corpus, num_workers):
    corpus = bad_image_corpus(n_plain=4)
    ds = ImageDataset(corpus.root)
    batches, order, bad = collect(make_loader(ds, 5, resize_mode="train", load_size=24, num_workers=num_workers))
    assert sorted(p for p, _ in bad) == corpus.bad
    assert all(reason for _, reason in bad)
    assert sorted(ds.paths[i] for i in order) == corpus.good
    for b in batches:
        assert len(b["indices"]) == len(b["images"]) == len(b["sizes"]) == len(b["labels"])
        assert len(b["indices"]) + len(b["bad"]) <= 5
        assert (b["sizes"].min(dim=1).values == 24).all()


def test_a_batch_of_only_bad_files_is_empty_not_an_error(tmp_path):
    for i in range(3):
        (tmp_path / f"e{i}.jpg").write_bytes(b"")
    b = next(iter(make_loader(ImageDataset(tmp_path), 3, resize_mode="eval", load_size=8)))
    assert b["images"].shape[0] == 0 and b["sizes"].shape == (0, 2) and len(b["bad"]) == 3


def test_workers_give_the_same_batches(image_folder):
    ds = ImageDataset(image_folder(per_class=4))
    kw = dict(shuffle=True, seed=5, resize_mode="train", load_size=12)
    a, b = list(make_loader(ds, 3, num_workers=0, **kw)), list(make_loader(ds, 3, num_workers=2, **kw))
    for x, y in zip(a, b):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["indices"], y["indices"])


def test_order_is_deterministic_per_seed_and_epoch():
    ds = ImageDataset("builtin:shapes?n=30&size=16")

    def order(seed, epoch):
        return collect(make_loader(ds, 4, shuffle=True, seed=seed, epoch=epoch, load_size=8))[1]

    first = order(1, 0)
    assert sorted(first) == list(range(30)) and first != list(range(30))
    assert order(1, 0) == first
    assert order(1, 1) != first and sorted(order(1, 1)) == list(range(30))
    assert order(2, 0) != first


def test_resume_mid_epoch_skips_the_first_batches():
    ds = ImageDataset("builtin:shapes?n=23&size=16")
    kw = dict(shuffle=True, seed=0, epoch=3, load_size=8)
    full = collect(make_loader(ds, 4, **kw))[0]
    resumed = collect(make_loader(ds, 4, start_batch=2, **kw))[0]
    assert [b["indices"].tolist() for b in resumed] == [b["indices"].tolist() for b in full[2:]]


def test_drop_last_drops_the_incomplete_batch():
    ds = ImageDataset("builtin:shapes?n=10&size=16")
    batches = collect(make_loader(ds, 4, drop_last=True, load_size=8))[0]
    assert [len(b["indices"]) for b in batches] == [4, 4]


@pytest.mark.parametrize("n, world, drop_last", [(10, 3, False), (10, 3, True), (2, 4, False), (12, 4, True)])
def test_sharded_sampler_splits_one_permutation(n, world, drop_last):
    samplers = [ShardedSampler(n, shuffle=True, seed=7, drop_last=drop_last, rank=r, world_size=world)
                for r in range(world)]
    for s in samplers:
        s.set_epoch(2)
    shards = [list(s) for s in samplers]
    per_rank = n // world if drop_last else -(-n // world)
    assert all(len(sh) == per_rank == len(s) for sh, s in zip(shards, samplers))
    perm = np.random.default_rng([7, 2]).permutation(n)
    interleaved = [shards[r][k] for k in range(per_rank) for r in range(world)]
    expected = perm[: per_rank * world] if drop_last else np.resize(perm, per_rank * world)
    assert interleaved == expected.tolist()
    if drop_last:
        assert len(set(interleaved)) == len(interleaved)
    else:
        assert set(interleaved) == set(range(n))


def test_sharded_sampler_skip_and_epoch_reset():
    s = ShardedSampler(9, shuffle=True, seed=0, rank=1, world_size=2)
    s.set_epoch(1)
    full = list(s)
    s.skip(3)
    assert list(s) == full[3:] and len(s) == len(full) - 3
    s.set_epoch(1)
    assert list(s) == full


def test_sampler_reads_rank_and_world_from_torch_distributed(monkeypatch):
    monkeypatch.setattr(loader_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(loader_mod.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(loader_mod.dist, "get_world_size", lambda: 2)
    ds = ImageDataset("builtin:shapes?n=6&size=16")
    loader = make_loader(ds, 2, shuffle=False, load_size=8)
    assert (loader.sampler.rank, loader.sampler.world_size) == (1, 2)
    assert collect(loader)[1] == [1, 3, 5]


def test_bad_arguments():
    ds = ImageDataset("builtin:shapes?n=4&size=16")
    with pytest.raises(ValueError, match="resize_mode"):
        make_loader(ds, 2, resize_mode="crop")
    with pytest.raises(ValueError, match="skip"):
        make_loader(ds, 2, sampler=torch.utils.data.SequentialSampler(ds), start_batch=1)
