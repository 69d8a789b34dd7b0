"""Configuration: files, presets, overrides, and the messages a user sees for bad settings."""

from __future__ import annotations

import pytest

from dinolab.errors import ConfigError
from dinolab.train.config import Config, list_presets, load_config, parse_override, validate


def test_defaults_presets_and_overrides():
    assert {"default", "dino_vits16"} <= set(list_presets())
    cfg = load_config("default", ["optim.lr=1e-3", "crops.global_crops_scale=[0.3, 1]", "model.pretrained=null",
                                  "train.precision=bf16", "eval.knn_k=[5]"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)  # "1e-3" is a string to YAML 1.1
    assert cfg.crops.global_crops_scale == (0.3, 1.0)
    assert cfg.model.pretrained is None and cfg.train.precision == "bf16" and cfg.eval.knn_k == [5]
    assert cfg.data.source == "builtin:digits"  # from the preset
    assert cfg.dino.student_temp == 0.1  # not in the preset: the DINO v1 default
    assert load_config("dino_vits16").train.batch_size == 512


def test_yaml_file_roundtrip(tmp_path):
    cfg = load_config("default", ["train.epochs=3", "crops.options={hflip_p: 0.5}"])
    path = tmp_path / "run.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert load_config(str(path), ["train.epochs=4"]).train.epochs == 4


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lr_rate'.*did you mean optim.lr\?"):
        load_config("default", ["optim.lr_rate=0.1"])
    with pytest.raises(ConfigError, match=r"'optimizer.weight_decay'.*did you mean optim.weight_decay\?"):
        load_config("default", ["optimizer.weight_decay=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean teacher.teacher_temp\?"):
        load_config("default", ["teacher.techer_temp=0.04"])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"'train.epoch' \(in .*bad.yaml\); did you mean train.epochs\?"):
        load_config(path)


def test_wrong_types_name_key_value_and_type():
    with pytest.raises(ConfigError, match=r"train.epochs='ten' \(command line\) has the wrong type: expected an "
                                          r"integer"):
        load_config("default", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"train.progress=3 .* expected true or false"):
        load_config("default", ["train.progress=3"])
    with pytest.raises(ConfigError, match=r"expected a list of 2 numbers"):
        load_config("default", ["crops.global_crops_scale=[0.4]"])
    with pytest.raises(ConfigError, match=r"dino.centering='sinkhorn'.*one of 'softmax', 'sinkhorn_knopp'; "
                                          r"did you mean 'sinkhorn_knopp'\?"):
        load_config("default", ["dino.centering=sinkhorn"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_override("optim.lr")


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match=r"'dino_vits61' is neither a config file nor a preset; did you mean "
                                          r"dino_vits16\?"):
        load_config("dino_vits61")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/config.yaml")


@pytest.mark.parametrize("overrides, message", [
    (["crops.global_crops_size=30"], r"crops.global_crops_size=30 is not a multiple of model.patch_size=8; "
                                     r"use e.g. crops.global_crops_size=24"),
    (["crops.local_crops_size=48"], r"crops.local_crops_size=48 is larger than crops.global_crops_size=32"),
    (["train.batch_size=2", "train.accumulate=4"], r"train.batch_size=2 must be divisible by processes x "
                                                   r"train.accumulate \(1 x 4\)"),
    (["crops.global_crops_scale=[0.8, 0.4]"], r"0 < min <= max <= 1"),
    (["data.source=null"], r"data.source is not set"),
    (["gram.loss_weight=-1"], r"gram.loss_weight=-1.0 must be >= 0"),
    (["ibot.mask_ratio_min_max=[0.5, 0.1]"], r"ibot.mask_ratio_min_max=\[0.5, 0.1\] must satisfy 0 <= min <= max"),
    (["crops.options={hflip: 0.5}"], r"unknown option crops.options.hflip; did you mean crops.options.hflip_p\?"),
    (["model.options={depth: 3}"], r"model.options.depth has its own key"),
    (["model.arch=vit_smal"], r"unknown model name 'vit_smal'; did you mean vit_small"),
    (["data.load_size=24"], r"data.load_size=24 is smaller than crops.global_crops_size=32: every crop would be cut "
                            r"from an image smaller than itself; raise data.load_size to at least 32"),
    (["data.max_pixels=1000"], r"data.max_pixels=1000 is smaller than one global crop \(crops.global_crops_size=32, "
                               r"1024 pixels\); raise data.max_pixels or set it to null"),
    (["data.max_aspect=0.5"], r"data.max_aspect=0.5 must be at least 1"),
    (["data.num_workers=-1"], r"data.num_workers=-1 must be 0"),
])
def test_impossible_combinations_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config("default", overrides))


def test_batch_smaller_than_the_number_of_processes():
    with pytest.raises(ConfigError, match=r"train.batch_size=2 is smaller than the number of processes \(4\)"):
        validate(load_config("default", ["train.batch_size=2"]), world_size=4)


def test_high_teacher_temperature_is_a_warning():
    warnings = validate(load_config("default", ["teacher.teacher_temp=0.2"]))
    assert any("teacher.teacher_temp=0.2 is above 0.1" in w for w in warnings)
    assert validate(load_config("default")) == []


def test_dataclass_defaults_are_the_dino_v1_recipe():
    c = Config()
    assert (c.optim.lr, c.optim.weight_decay, c.optim.weight_decay_end, c.optim.clip_grad) == (0.0005, 0.04, 0.4, 3.0)
    assert (c.teacher.momentum_teacher, c.dino.out_dim, c.crops.local_crops_number) == (0.996, 65536, 8)


def test_data_max_pixels_reaches_the_decoder(tmp_path, make_image):
    from dinolab.data import DEFAULT_MAX_PIXELS, UnreadableImage
    from dinolab.train.data import build_run_data

    assert load_config("default").data.max_pixels == DEFAULT_MAX_PIXELS
    make_image(tmp_path / "img.png", (40, 30))  # 1200 pixels
    strict = load_config("default", [f"data.source={tmp_path}", "data.max_pixels=1024"])
    validate(strict)
    with pytest.raises(UnreadableImage, match=r"40x30 = 1,200 pixels is above the limit of 1,024 .* data.max_pixels"):
        build_run_data(strict).train.load(0)
    unlimited = load_config("default", [f"data.source={tmp_path}", "data.max_pixels=null"])
    validate(unlimited)
    assert build_run_data(unlimited).train.load(0).shape == (3, 30, 40)
