"""Damaged or hostile architecture values are refused before anything is built (issue 22 item 6).

A config.json with ``num_hidden_layers: 10000000`` used to build ten million blocks (minutes, GBs)
before the shape check; other bad values gave raw ZeroDivisionError / ValueError / RuntimeError, and
int8 / bool tensors were silently promoted to float.
"""

import json
import shutil
import time

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from dinolab import load_model
from dinolab.errors import WeightsError


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "base"
    cfg = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=28, patch_size=14)
    transformers.Dinov2Model(cfg).save_pretrained(folder)
    return folder


def _with_config(base, tmp_path, **changes):
    d = tmp_path / "bad"
    shutil.copytree(base, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("changes, named", [
    ({"num_hidden_layers": 10_000_000}, "depth=10000000"),
    ({"num_hidden_layers": 3}, "holds 2 blocks"),
    ({"num_hidden_layers": "2"}, "depth='2'"),
    ({"hidden_size": -1}, "embed_dim=-1"),
    ({"hidden_size": 64, "num_attention_heads": 2}, "cls_token is 32 wide"),
    ({"patch_size": 0}, "patch_size=0"),
    ({"num_attention_heads": 0}, "num_heads=0"),
    ({"num_attention_heads": 3}, "divisor of embed_dim=32"),
    ({"image_size": "abc"}, "image_size='abc'"),
    ({"image_size": 1e9}, "img_size=1000000000"),
    ({"layer_norm_eps": "x"}, "norm_eps='x'"),
    ({"layer_norm_eps": -1.0}, "norm_eps=-1.0"),
])
def test_bad_architecture_values_are_refused_quickly_by_name(hf_folder, tmp_path, changes, named):
    folder = _with_config(hf_folder, tmp_path, **changes)
    t = time.perf_counter()
    with pytest.raises(WeightsError) as e:
        load_model(folder)
    assert named in str(e.value) and "bad" in str(e.value)  # the value and the file
    assert time.perf_counter() - t < 10  # nothing large was built


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_non_float_tensors_are_refused(hf_folder, tmp_path, dtype):
    d = tmp_path / "q"
    shutil.copytree(hf_folder, d)
    sd = load_file(d / "model.safetensors")
    key = "encoder.layer.0.attention.attention.query.weight"
    sd[key] = sd[key].to(dtype)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="not floating point.*query.weight"):
        load_model(d)


def test_the_untouched_folder_still_loads(hf_folder):
    assert load_model(hf_folder).depth == 2


def test_nan_weights_are_refused_at_load(tmp_path):
    # issue 22 item 12: `dinolab embed` wrote an all-NaN .npz from such weights and exited 0
    from dinolab import create_model, save_model

    model = create_model("vit_tiny", patch_size=8, img_size=32, depth=1)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    path = save_model(model, tmp_path / "m")
    with pytest.raises(WeightsError, match="NaN or infinite.*blocks.0.mlp.fc1.weight"):
        load_model(path)
