import json

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.cli import main
from dinolab.curate import EmbeddingStore, find_duplicates
from dinolab.curate.verify import PixelVerifier, _ncc, thumbnail
from dinolab.errors import ConfigError
from dinolab.eval.features import Embeddings


def _texture(seed: int, size: int = 160) -> Image.Image:
    """Smooth random texture: every seed gives a different picture of the same kind."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((1, 3, size // 8, size // 8), dtype=np.float32))
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    noise = rng.normal(0, 0.04, (3, size, size)).astype(np.float32)  # fine grain, like a photo's
    arr = ((x[0] + torch.from_numpy(noise)).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr)


def _copies(im: Image.Image, tmp_path, name: str) -> dict[str, str]:
    w, h = im.size
    out = {}
    im.save(tmp_path / f"{name}.png")
    out["original"] = str(tmp_path / f"{name}.png")
    im.resize((w * 2 // 5, h * 2 // 5), Image.BICUBIC).save(tmp_path / f"{name}_small.png")
    out["resized"] = str(tmp_path / f"{name}_small.png")
    im.save(tmp_path / f"{name}_q30.jpg", quality=30)
    out["jpeg"] = str(tmp_path / f"{name}_q30.jpg")
    im.crop((12, 5, 12 + int(w * 0.88), 5 + int(h * 0.88))).save(tmp_path / f"{name}_crop.png")
    out["cropped"] = str(tmp_path / f"{name}_crop.png")
    im.transpose(Image.FLIP_LEFT_RIGHT).save(tmp_path / f"{name}_flip.png")
    out["flipped"] = str(tmp_path / f"{name}_flip.png")
    return out


def test_ncc_matches_a_window_by_window_correlation():
    g = torch.Generator().manual_seed(0)
    outer = torch.rand(1, 1, 12, 15, generator=g)
    kernel = torch.rand(1, 1, 7, 9, generator=g)
    got = _ncc(outer, kernel)[0].numpy()
    o, k = outer[0, 0].double().numpy(), kernel[0, 0].double().numpy().ravel()
    want = np.array([[np.corrcoef(o[y:y + 7, x:x + 9].ravel(), k)[0, 1] for x in range(15 - 9 + 1)]
                     for y in range(12 - 7 + 1)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # a window cut from the outer picture itself correlates perfectly at its offset
    assert _ncc(outer, outer[..., 3:10, 4:13])[0, 3, 4] == pytest.approx(1.0, abs=1e-5)
    # colour: each channel centred on its own mean, then one correlation over all channels
    outer3 = torch.rand(1, 3, 9, 10, generator=g)
    kernel3 = torch.rand(1, 3, 5, 6, generator=g)
    o3, k3 = outer3[0].double().numpy(), kernel3[0].double().numpy()
    kc = (k3 - k3.mean(axis=(1, 2), keepdims=True)).ravel()
    for y, x in [(0, 0), (2, 3), (4, 4)]:
        win = o3[:, y:y + 5, x:x + 6]
        wc = (win - win.mean(axis=(1, 2), keepdims=True)).ravel()
        want3 = kc @ wc / np.sqrt((kc @ kc) * (wc @ wc))
        assert float(_ncc(outer3, kernel3)[0, y, x]) == pytest.approx(want3, abs=1e-5)


def test_the_same_shapes_in_other_colours_do_not_verify():
    v = PixelVerifier()
    boxes = torch.full((64, 64), 0.3)
    boxes[10:30, 40:60] = 0.8
    boxes[45:55, 5:25] = 0.6
    grey = torch.full((64, 64), 0.5)
    red, green = torch.stack([boxes, grey, grey]), torch.stack([grey, boxes, grey])
    assert v.pair_score(red, red[:, 4:60, 3:59]) > 0.9  # the same picture, cropped
    assert v.pair_score(red, green) < 0.5  # one layout, drawn in the red channel vs the green one


def test_edited_copies_verify_and_different_pictures_of_one_texture_do_not(tmp_path):
    from dinolab.data.decode import decode_image

    v = PixelVerifier()
    files = _copies(_texture(0), tmp_path, "a")
    thumbs = {k: thumbnail(decode_image(p), v.size) for k, p in files.items()}
    for kind in ("resized", "jpeg", "cropped", "flipped"):
        a, b = thumbs["original"], thumbs[kind]
        assert max(v.pair_score(a, b), v.pair_score(b, a)) > 0.9, kind
    for seed in (1, 2, 3):
        other = thumbnail(torch.from_numpy(np.array(_texture(seed))).permute(2, 0, 1), v.size)
        a = thumbs["original"]
        assert max(v.pair_score(a, other), v.pair_score(other, a)) < 0.5
    # without flips the mirrored copy is a different picture
    no_flip = PixelVerifier(flips=False)
    assert no_flip.pair_score(thumbs["original"], thumbs["flipped"]) < 0.5
    # a crop beyond max_crop is not searched for
    tight = PixelVerifier(max_crop=0.02)
    a, b = thumbs["original"], thumbs["cropped"]
    assert max(tight.pair_score(a, b), tight.pair_score(b, a)) < 0.9


def test_pictures_without_detail_match_only_alike_pictures_without_detail():
    v = PixelVerifier()
    grey = torch.full((64, 64), 0.5)
    assert v.pair_score(grey, torch.full((40, 40), 0.5 + 2 / 255)) == 1.0
    assert v.pair_score(grey, torch.full((64, 64), 0.6)) == 0.0
    assert v.pair_score(grey, torch.rand(64, 64)) == 0.0
    ramp = torch.linspace(0.2, 0.8, 64)
    across, down = ramp.expand(64, 64), ramp[:, None].expand(64, 64)
    assert v.pair_score(across, (across + 2 / 255)[::2, ::2]) >= v.min_score  # the same shading, smaller
    assert v.pair_score(across, down) < v.min_score


def test_detail_removes_the_broad_layout():
    from dinolab.curate.verify import detail

    ramp = torch.linspace(0, 1, 64).expand(64, 64)
    # a linear ramp is all layout, no detail (beyond 3σ of the frame's edges, which are replicated)
    assert detail(ramp, 8.0)[24:-24, 24:-24].abs().max() < 1e-4
    spot = torch.zeros(64, 64)
    spot[32, 32] = 1.0
    d = detail(spot, 8.0)
    # the blur spreads the spot with weights g(x)g(y), g a normalised Gaussian of σ 8 (radius 24)
    g = torch.exp(-torch.arange(-24, 25.0) ** 2 / 128)
    g = g / g.sum()
    assert d[32, 32] == pytest.approx(1 - float(g[24] ** 2), abs=1e-6)
    assert d[32, 40] == pytest.approx(-float(g[24] * g[32]), abs=1e-7)


def test_dedup_links_only_verified_pairs(tmp_path):
    a = _copies(_texture(0), tmp_path, "a")
    b = _copies(_texture(1), tmp_path, "b")
    paths = [a["original"], a["jpeg"], a["cropped"], b["original"], b["resized"]]
    # embeddings that put all five together: a semantic space sees one texture
    rng = np.random.default_rng(0)
    x = np.ones((5, 16), np.float32) + 0.01 * rng.normal(size=(5, 16)).astype(np.float32)
    store = EmbeddingStore(x, paths)
    assert [g.tolist() for g in find_duplicates(store, threshold=0.9, k=4, progress=False).groups] == [[0, 1, 2, 3, 4]]
    res = find_duplicates(store, threshold=0.9, k=4, verify=PixelVerifier(), progress=False)
    assert [g.tolist() for g in res.groups] == [[0, 1, 2], [3, 4]]
    assert len(res.edges) == 4 and len(res.rejected_edges) == 6  # 10 candidate pairs, the 6 across a/b fail
    assert (res.verify_scores >= 0.75).all() and (res.rejected_scores < 0.75).all()
    res.save(tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "groups.json").read_text())
    assert doc["verify"]["n_rejected"] == 6 and len(doc["verify"]["rejected_pairs"]) == 6


def test_unreadable_images_keep_their_pairs_apart_and_missing_paths_are_refused(tmp_path):
    a = _copies(_texture(0), tmp_path, "a")
    paths = [a["original"], a["jpeg"], str(tmp_path / "gone.jpg")]
    store = EmbeddingStore(np.ones((3, 8), np.float32), paths)
    with pytest.warns(UserWarning, match="gone.jpg"):
        res = find_duplicates(store, threshold=0.9, k=2, verify=PixelVerifier(), progress=False)
    assert [g.tolist() for g in res.groups] == [[0, 1]]
    assert np.isnan(res.rejected_scores).all() and len(res.rejected_edges) == 2
    with pytest.raises(ConfigError, match="no image paths"):
        find_duplicates(EmbeddingStore(np.ones((3, 8), np.float32)), verify=PixelVerifier(), progress=False)
    with pytest.raises(ConfigError, match="max_crop"):
        PixelVerifier(max_crop=1.0)


def test_dedup_command_verify_option(tmp_path, capsys):
    a = _copies(_texture(0), tmp_path, "a")
    b = _copies(_texture(1), tmp_path, "b")
    paths = [a["original"], a["resized"], b["original"]]
    Embeddings(paths, np.ones((3, 8), np.float32)).save(tmp_path / "pool.npz")
    out = tmp_path / "out"
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(out), "--verify"]) == 0
    assert (out / "removed.txt").read_text().splitlines() == [a["resized"]]
    doc = json.loads((out / "groups.json").read_text())
    assert doc["verify"]["min_score"] == 0.75 and doc["verify"]["n_rejected"] == 2
    assert doc["threshold"] == 0.8  # verification lowers the default embedding threshold (candidates only)
    assert "verified" in capsys.readouterr().out


def test_dedup_command_verifies_by_default_when_the_images_are_at_hand(tmp_path, capsys):
    a = _copies(_texture(0), tmp_path, "a")
    b = _copies(_texture(1), tmp_path, "b")
    Embeddings([a["original"], a["resized"], b["original"]], np.ones((3, 8), np.float32)).save(tmp_path / "pool.npz")
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(tmp_path / "auto")]) == 0
    assert "pixel verification on" in capsys.readouterr().out
    assert (tmp_path / "auto" / "removed.txt").read_text().splitlines() == [a["resized"]]
    assert main(["dedup", str(tmp_path / "pool.npz"), "--out", str(tmp_path / "off"), "--verify", "off"]) == 0
    assert "pixel verification off" in capsys.readouterr().out
    assert len((tmp_path / "off" / "removed.txt").read_text().splitlines()) == 2  # one group of all three
    # embeddings whose paths are not files here: auto falls back to the embeddings alone, and says so
    Embeddings(["x.jpg", "y.jpg"], np.ones((2, 8), np.float32)).save(tmp_path / "names.npz")
    assert main(["dedup", str(tmp_path / "names.npz"), "--out", str(tmp_path / "names")]) == 0
    assert "pixel verification off (the images are not at hand); embedding threshold 0.9" in capsys.readouterr().out


def test_pair_loop_runs_on_one_thread_and_restores_the_setting(tmp_path, monkeypatch):
    # issue 22 item 7: the per-pair ops fanned out over threads that only waited (12.7 s vs 0.67 s)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((np.random.default_rng(i).random((40, 40, 3)) * 255).astype("uint8")).save(paths[-1])
    seen = []
    real = PixelVerifier.pair_score
    monkeypatch.setattr(PixelVerifier, "pair_score", lambda self, a, b: seen.append(torch.get_num_threads())
                        or real(self, a, b))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        PixelVerifier().scores(paths, np.array([[0, 1], [1, 2]]), progress=False)
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
