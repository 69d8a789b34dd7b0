"""Files from strangers: nothing they contain is executed, and nothing they name outside their folder is read.

Covers the readers not tested elsewhere (checkpoints and .pth pickles: test_weights.py and
train/test_checkpoint.py; file lists with a root: data/test_datasets.py): Hugging Face shard
indexes, .npz embeddings holding pickled objects, YAML configs with Python tags.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import dinolab
from dinolab.errors import ConfigError, DataError, WeightsError
from dinolab.eval.features import Embeddings
from dinolab.train.config import load_config


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hf_folder(folder, weight_map):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 32}))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/../../outside.safetensors"])
def test_a_shard_index_cannot_point_outside_its_folder(tmp_path, shard, monkeypatch):
    outside = tmp_path / "outside.safetensors"
    save_file({"embeddings.cls_token": torch.zeros(1, 1, 32)}, str(outside))
    folder = _hf_folder(tmp_path / "hf", {"embeddings.cls_token": shard})
    opened = []
    monkeypatch.setattr("dinolab.models.formats.hf._read_weights", lambda f: opened.append(f) or {})
    with pytest.raises(WeightsError, match=r"shard .* lies outside the model folder .*this file was not read"):
        dinolab.load_model(folder)
    assert opened == []  # refused before any shard was opened


def test_a_malformed_shard_index_is_a_clear_error(tmp_path):
    folder = _hf_folder(tmp_path / "hf", {})
    (folder / "model.safetensors.index.json").write_text('{"weights": 3}')
    with pytest.raises(WeightsError, match=r"model.safetensors.index.json: not a valid shard index .*'weight_map'"):
        dinolab.load_model(folder)


@pytest.mark.parametrize("writer", ["numpy", "hand"])
def test_embeddings_with_pickled_objects_are_refused_unrun(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "emb.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit(marker)
    if writer == "numpy":
        np.savez(path, paths=np.array(["a.jpg"]), cls=payload)
    else:  # a raw pickle named .npz
        path.write_bytes(pickle.dumps({"paths": ["a.jpg"], "cls": _Exploit(marker)}))
    with pytest.raises(DataError, match=r"emb.npz is not a readable .npz embeddings file"):
        Embeddings.load(path)
    assert not marker.exists()


def test_a_config_with_python_tags_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"train:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"cannot parse \(in .*evil.yaml\)"):
        load_config(cfg)
    with pytest.raises(ConfigError, match=r"not valid YAML"):
        load_config("default", [f"train.epochs=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def test_an_image_given_as_weights_is_called_not_a_weights_file_by_the_commands(tmp_path, capsys):
    from PIL import Image

    from dinolab.cli import main

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "cat.png")
    assert main(["embed", str(tmp_path / "cat.png"), "builtin:shapes?n=2", "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err
    assert "cat.png: not a weights file: its content is a PNG image" in err and "run code" not in err
