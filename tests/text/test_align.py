import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import dinolab
from dinolab.errors import DataError, DinolabError, WeightsError
from dinolab.runtime.metrics_log import read_metrics
from dinolab.text import align, load_aligned, load_pairs, zeroshot_classify

TINY = dict(image_size=16, embed_dim=32, text_width=32, text_depth=1, head_hidden_dim=64, device="cpu",
            precision="fp32", progress=False, num_workers=0)
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220)}


def colour_pairs(root, per_colour=6):
    """Noisy solid-colour 16x16 images captioned 'a <colour> square', and their CSV (relative paths)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rgb in COLOURS.items():
        for i in range(per_colour):
            a = np.clip(np.array(rgb)[None, None] + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / f"{name}{i}.png")
            rows.append([f"{name}{i}.png", f"a {name} square"])
    with open(root / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"]] + rows)
    return root / "pairs.csv", [str(root / r[0]) for r in rows]


def tiny_backbone(seed=0):
    torch.manual_seed(seed)
    return dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1)


def test_backbone_stays_bit_identical_and_zero_shot_succeeds(tmp_path):
    pairs, images = colour_pairs(tmp_path / "data")
    backbone = tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = align(backbone, pairs, out=tmp_path / "run", epochs=30, batch_size=18, lr=1e-2, **TINY)
    after = backbone.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    assert model.history[-1]["loss"] < model.history[0]["loss"]

    result = zeroshot_classify(model, images, list(COLOURS), device="cpu", progress=False)
    truth = [name for name in COLOURS for _ in range(6)]
    assert result.predicted_classes == truth
    # The saved copy of the backbone is the same tensors too.
    saved = dinolab.load_model(tmp_path / "run" / "backbone.safetensors")
    assert all(torch.equal(before[k], v) for k, v in saved.state_dict().items())


def test_saved_folder_round_trip_and_wrong_backbone(tmp_path):
    pairs, images = colour_pairs(tmp_path / "data", per_colour=2)
    weights = tmp_path / "bb.safetensors"
    dinolab.save_model(tiny_backbone(), weights)
    out = tmp_path / "run"
    model = align(weights, pairs, out=out, epochs=2, batch_size=3, **TINY)
    for name in ("aligned.json", "heads.safetensors", "tokenizer.json", "backbone.safetensors", "checkpoint.pt"):
        assert (out / name).exists(), name
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [2, 4]

    again = load_aligned(out)
    texts = ["a red square", "a blue thing"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text(texts), model.encode_text(texts))
        torch.testing.assert_close(again.encode_images(x), model.encode_images(x))
    assert again.scale == pytest.approx(model.scale)
    assert again.tokenizer.vocab == model.tokenizer.vocab

    other = tmp_path / "other.safetensors"
    dinolab.save_model(tiny_backbone(seed=1), other)
    with pytest.raises(WeightsError, match="not the backbone"):
        load_aligned(out, weights=other)
    assert load_aligned(out, weights=weights).backbone_fingerprint == again.backbone_fingerprint

    # A reference instead of a copy: loads through the recorded path.
    ref = tmp_path / "ref"
    align(weights, pairs, out=ref, epochs=1, batch_size=3, copy_backbone=False, **TINY)
    assert not (ref / "backbone.safetensors").exists()
    assert json.loads((ref / "aligned.json").read_text())["backbone"]["path"] == str(weights.resolve())
    assert load_aligned(ref).backbone_fingerprint == again.backbone_fingerprint


def test_bad_rows_and_unreadable_images_are_skipped_and_named(tmp_path):
    pairs, _ = colour_pairs(tmp_path / "data", per_colour=2)
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    with open(pairs, "a", newline="") as f:
        csv.writer(f).writerows([["missing.png", "a red square"], ["red0.png", "  "], ["red1.png"],
                                 ["broken.png", "a broken square"], []])
    p = load_pairs(pairs)
    assert len(p) == 7  # 6 good + broken.png (found unreadable only when decoded)
    reasons = dict(p.skipped)
    assert reasons[str(tmp_path / "data" / "missing.png")].startswith("file not found")
    assert reasons[f"{pairs} line 9"] == "empty caption"
    assert "fewer than the header" in reasons[f"{pairs} line 10"]

    model = align(tiny_backbone(), p, out=tmp_path / "run", epochs=1, batch_size=3, max_bad_fraction=0.5, **TINY)
    logged = (tmp_path / "run" / "skipped.log").read_text().splitlines()
    assert len(logged) == 4 and len(model.skipped) == 4
    assert any(line.startswith(str(tmp_path / "data" / "broken.png")) for line in logged)
    assert "broken" not in model.tokenizer.vocab  # its caption was dropped with the image


def test_csv_and_source_errors_name_the_fix(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("path,text\nx.png,a cat\n")
    with pytest.raises(DataError, match="must name the columns 'image' and 'caption'"):
        load_pairs(bad)
    with pytest.raises(DataError, match="has no captions"):
        load_pairs("builtin:digits")
    with pytest.raises(DataError, match="does not exist"):
        load_pairs(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("image,caption\nmissing.png,a cat\n")
    with pytest.raises(DataError, match="no usable image-caption pair; first problem"):
        load_pairs(empty)


def test_existing_run_is_kept_unless_force_and_resume_continues(tmp_path):
    pairs, _ = colour_pairs(tmp_path / "data", per_colour=2)
    out = tmp_path / "run"
    align(tiny_backbone(), pairs, out=out, epochs=2, batch_size=3, **TINY)
    before = (out / "heads.safetensors").read_bytes()
    with pytest.raises(DinolabError, match="already exists.*--force"):
        align(tiny_backbone(), pairs, out=out, epochs=2, batch_size=3, **TINY)
    assert (out / "heads.safetensors").read_bytes() == before

    resumed = align(tiny_backbone(), pairs, out=out, epochs=3, batch_size=3, resume=True, **TINY)
    assert [r["epoch"] for r in resumed.history] == [3]
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    with pytest.raises(DinolabError, match="another backbone"):
        align(tiny_backbone(seed=5), pairs, out=out, epochs=4, batch_size=3, resume=True, **TINY)

    align(tiny_backbone(), pairs, out=out, epochs=1, batch_size=3, force=True, **TINY)
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1]


def test_head_blocks_with_cached_and_recomputed_tokens_agree(tmp_path):
    pairs, _ = colour_pairs(tmp_path / "data", per_colour=2)
    runs = [align(tiny_backbone(), pairs, epochs=2, batch_size=3, head_blocks=1, cache_limit_bytes=limit, **TINY)
            for limit in (1 << 30, 0)]
    losses = [[r["loss"] for r in m.history] for m in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert "zeroshot_acc" not in runs[1].history[0]  # nothing cached to evaluate on (and no classes)


def test_builtin_shapes_logs_zero_shot_accuracy_on_its_classes():
    model = align(tiny_backbone(), "builtin:shapes?n=20&size=16", epochs=1, batch_size=10, **TINY)
    acc = model.history[0]["zeroshot_acc"]
    assert 0.0 <= acc <= 1.0
