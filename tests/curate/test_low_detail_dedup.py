"""Issue 22 item 13: distinct low-detail drawings (8×8 digits upscaled to 32 px) are not copies."""

import io
import itertools

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from dinolab.curate import EmbeddingStore, find_duplicates
from dinolab.curate.dedup import split_weak_chains
from dinolab.curate.verify import PixelVerifier, thumbnail

N = 60


def _digits(tmp_path) -> tuple[list[str], np.ndarray, np.ndarray]:
    d = load_digits()
    paths = []
    for i in range(N):
        paths.append(str(tmp_path / f"d{i}.png"))
        Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BILINEAR).save(paths[-1])
    return paths, d.target[:N], d.images[:N].reshape(N, -1).astype(np.float32)


def _thumb(im: Image.Image) -> torch.Tensor:
    a = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    return (thumbnail(a, 64) * 255).round() / 255


def test_different_drawings_of_one_digit_do_not_verify_but_their_copies_do(tmp_path):
    paths, labels, _ = _digits(tmp_path)
    v = PixelVerifier()
    ims = [Image.open(p) for p in paths[:30]]
    thumbs = [_thumb(im) for im in ims]
    same = [v.pair_score(thumbs[i], thumbs[j]) for i, j in itertools.combinations(range(30), 2) if labels[i] == labels[j]]
    assert len(same) > 20 and max(same) < v.min_score  # before the fix up to 0.96
    for im in ims[:5]:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        copies = [im.resize((26, 26), Image.BICUBIC), Image.open(buf), im.crop((2, 1, 30, 29)),
                  im.transpose(Image.FLIP_LEFT_RIGHT)]
        assert min(v.pair_score(_thumb(im), _thumb(c)) for c in copies) >= v.min_score


def test_dedup_keeps_every_distinct_digit_and_finds_planted_copies(tmp_path):
    paths, _, pixels = _digits(tmp_path)
    Image.open(paths[0]).resize((28, 28), Image.BICUBIC).save(tmp_path / "copy0.png")
    Image.open(paths[0]).transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / "flip0.png")
    paths += [str(tmp_path / "copy0.png"), str(tmp_path / "flip0.png")]
    x = np.concatenate([pixels, pixels[:1], pixels[:1, ::-1]])  # a pixel space links same-digit drawings
    res = find_duplicates(EmbeddingStore(x, paths), threshold=0.5, k=16, verify=PixelVerifier(), progress=False)
    assert [g.tolist() for g in res.groups] == [[0, N, N + 1]]
    assert res.keep.sum() == N


def test_groups_do_not_chain_through_weak_links_and_copy_groups_stay_whole():
    # 0~1 and 1~2 verified, 0 and 2 different pictures: the kept 0 takes 1, and 2 stays alone
    edges = np.array([[0, 1], [1, 2], [3, 4], [3, 5], [3, 6], [4, 5]])
    asked = []

    def verified(pairs):
        asked.extend(map(tuple, pairs.tolist()))
        return np.zeros(len(pairs), bool)

    groups = split_weak_chains([np.array([0, 1, 2]), np.array([3, 4, 5, 6])], edges, lambda g: int(g[0]), verified)
    assert [g.tolist() for g in groups] == [[0, 1], [3, 4, 5, 6]]
    assert asked == [(0, 2)]  # members linked to the kept image directly are not checked again
    # a chain 0-1-2-3-4 whose kept image is its middle: 1 and 3 join 2; 0 and 4 stay alone
    chain = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    groups = split_weak_chains([np.arange(5)], chain, lambda g: 2 if 2 in g else int(g[0]),
                               lambda p: np.zeros(len(p), bool))
    assert [g.tolist() for g in groups] == [[1, 2, 3]]
