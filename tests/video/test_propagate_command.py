"""dinolab propagate end to end on tiny videos: files written, scores, bad frames, bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.data.builtin import load_builtin
from dinolab.data.video import mask_png, open_frames, read_mask, write_video_set
from dinolab.eval.davis import jaccard
from dinolab.eval.video import segment_video
from dinolab.models import Preprocess

RUN = ["--device", "cpu", "--precision", "fp32", "--no-progress", "--batch-size", "3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("prop")
    write_video_set(load_builtin("builtin:moving_shapes?videos=1&frames=6&size=32"), root / "davis")
    weights = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1), root / "w")
    return root / "davis" / "JPEGImages" / "video000", root / "davis" / "Annotations" / "video000", str(weights)


def _args(tiny, out, *extra):
    frames, gt, weights = tiny
    return ["propagate", weights, str(frames), "--mask", str(gt / "00000.png"), "--out", str(out), *RUN, *extra]


def test_masks_named_after_frames_and_scores(tiny, tmp_path, capsys):
    frames, gt, _ = tiny
    assert main(_args(tiny, tmp_path / "o", "--ground-truth", str(gt))) == 0
    out, err = capsys.readouterr()
    assert "frames fed at 32x32 px (4x4 patches of 8 px; the default" in err
    for i in range(6):
        with Image.open(tmp_path / "o" / f"{i:05d}.png") as im:
            assert im.mode == "P" and im.size == (32, 32)
    assert np.array_equal(read_mask(tmp_path / "o" / "00000.png"), read_mask(gt / "00000.png"))
    scores = json.loads((tmp_path / "o" / "propagate_scores.json").read_text())
    objects = sorted(set(np.unique(read_mask(gt / "00000.png")).tolist()) - {0})
    assert sorted(scores["propagation"]["objects"]) == [str(k) for k in objects]
    # the baseline by hand: the first mask against frames 1..4 (the last one left out)
    first = read_mask(gt / "00000.png")
    want = np.mean([np.mean([jaccard(first == k, read_mask(gt / f"{i:05d}.png") == k) for i in range(1, 5)])
                    for k in objects])
    assert scores["copy_first_mask"]["J"] == pytest.approx(want)
    assert scores["propagation"]["objects"][str(objects[0])]["frames"] == 4
    assert "J&F" in out and (tmp_path / "o" / "propagate_overlay.png").is_file()


def test_outputs_are_not_overwritten(tiny, tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "00003.png").write_text("mine")
    assert main(_args(tiny, tmp_path / "o")) == 2
    assert "00003.png" in capsys.readouterr().err
    assert (tmp_path / "o" / "00003.png").read_text() == "mine"


def test_an_unreadable_frame_is_named_and_skipped(tiny, tmp_path, capsys):
    frames, gt, weights = tiny
    copy = tmp_path / "frames"
    copy.mkdir()
    for p in sorted(frames.iterdir()):
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "00002.jpg").write_bytes(b"\xff\xd8 broken")
    code = main(["propagate", weights, str(copy), "--mask", str(gt / "00000.png"), "--out", str(tmp_path / "o"), *RUN])
    err = capsys.readouterr().err
    assert code == 2 and "00002.jpg" in err
    assert sorted(p.name for p in (tmp_path / "o").glob("0*.png")) == [f"{i:05d}.png" for i in (0, 1, 3, 4, 5)]


def test_a_mask_of_another_shape_is_refused(tiny, tmp_path, capsys):
    frames, _, weights = tiny
    (tmp_path / "m.png").write_bytes(mask_png(np.ones((10, 30), np.uint8)))
    code = main(["propagate", weights, str(frames), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o"), *RUN])
    err = capsys.readouterr().err
    assert code == 2 and "m.png" in err and "first frame" in err


def test_an_animated_gif_is_a_video(tiny, tmp_path, capsys):
    frames, gt, weights = tiny
    pics = [Image.open(p).convert("RGB") for p in sorted(frames.iterdir())]
    pics[0].save(tmp_path / "clip.gif", save_all=True, append_images=pics[1:], duration=40)
    code = main(["propagate", weights, str(tmp_path / "clip.gif"), "--mask", str(gt / "00000.png"),
                 "--out", str(tmp_path / "o"), *RUN])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").glob("0*.png")) == [f"{i:05d}.png" for i in range(6)]


def test_a_video_without_a_decoder_says_what_to_install(tiny, tmp_path, capsys):
    _, gt, weights = tiny
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    code = main(["propagate", weights, str(tmp_path / "clip.mp4"), "--mask", str(gt / "00000.png"),
                 "--out", str(tmp_path / "o"), *RUN])
    err = capsys.readouterr().err
    assert code == 2 and "clip.mp4" in err and "pip install av" in err


def test_help_names_the_default_size(capsys):
    with pytest.raises(SystemExit):
        main(["propagate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "at most 480 px" in out and "Examples:" in out


class PixelModel(torch.nn.Module):
    """1-pixel patches whose features are the pixel's normalised colour."""

    patch_size = 1

    def forward_features(self, x):
        return {"patches": x.flatten(2).transpose(1, 2)}


def test_a_moving_square_of_another_colour_is_followed_exactly():
    frames, truth = [], []
    for t in range(10):
        img = torch.zeros(3, 12, 12, dtype=torch.uint8)
        img[0] = 255  # red background, a blue square moving one pixel right per frame
        mask = np.zeros((12, 12), np.uint8)
        mask[3:7, 1 + t:5 + t] = 4
        img[:, torch.from_numpy(mask > 0)] = torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None]
        frames.append((f"{t:05d}", img))
        truth.append(mask)
    got = {}
    segment_video(PixelModel(), frames, truth[0], Preprocess(image_size=12, mean=(0, 0, 0), std=(1, 1, 1)),
                  batch_size=4, on_frame=lambda name, frame, mask: got.__setitem__(name, mask))
    assert list(got) == [f"{t:05d}" for t in range(10)]
    for t in range(10):
        assert np.array_equal(got[f"{t:05d}"], truth[t]), t


def test_open_frames_on_a_missing_path_is_clear(tmp_path):
    with pytest.raises(dinolab.errors.DataError, match="does not exist"):
        open_frames(tmp_path / "nope")


def test_white_on_black_masks_score_object_255(tiny, tmp_path, capsys):
    frames, gt, weights = tiny
    binary = tmp_path / "gt"
    binary.mkdir()
    for p in sorted(gt.iterdir()):
        Image.fromarray(((read_mask(p) > 0) * 255).astype(np.uint8), mode="L").save(binary / p.name)
    code = main(["propagate", weights, str(frames), "--mask", str(binary / "00000.png"), "--ground-truth", str(binary),
                 "--out", str(tmp_path / "o"), *RUN])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "o" / "propagate_scores.json").read_text())
    first = read_mask(binary / "00000.png") == 255
    want = np.mean([jaccard(first, read_mask(binary / f"{i:05d}.png") == 255) for i in range(1, 5)])
    assert list(scores["copy_first_mask"]["objects"]) == ["255"]  # not taken for DAVIS's void label
    assert scores["copy_first_mask"]["J"] == pytest.approx(want)


def test_an_object_smaller_than_a_patch_is_reported(tiny, tmp_path, capsys):
    frames, _, weights = tiny
    mask = np.zeros((32, 32), np.uint8)
    mask[:16, :16] = 1
    mask[0, 31] = 2  # one pixel, no patch centre (patch centres at 4, 12, 20, 28)
    (tmp_path / "m.png").write_bytes(mask_png(mask))
    code = main(["propagate", weights, str(frames), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o"), *RUN])
    err = capsys.readouterr().err
    assert code == 0 and "object(s) [2]" in err and "--image-size" in err
    assert set(np.unique(read_mask(tmp_path / "o" / "00003.png")).tolist()) <= {0, 1}
