"""InferenceOptions: one argparse group for every command that runs a model."""

import argparse

import pytest

from dinolab.errors import ConfigError
from dinolab.eval.options import InferenceOptions, add_inference_arguments
from dinolab.models import Preprocess, create_model


def parse(argv, **kw):
    parser = argparse.ArgumentParser()
    add_inference_arguments(parser, **kw)
    return InferenceOptions.from_args(parser.parse_args(argv))


def test_defaults_and_every_flag():
    assert parse([]) == InferenceOptions(batch_size=64, image_size=None, mean=None, std=None, device="auto",
                                         precision="auto", num_workers=2, progress=True)
    o = parse(["--batch-size", "8", "--image-size", "96", "--mean", "0.1", "0.2", "0.3", "--std", "1", "2", "3",
               "--device", "cpu", "--precision", "fp32", "--num-workers", "0", "--no-progress"])
    assert (o.batch_size, o.image_size, o.mean, o.std, o.device, o.precision, o.num_workers, o.progress) == (
        8, 96, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0), "cpu", "fp32", 0, False)


def test_only_declares_the_named_options_and_the_rest_keep_their_defaults(capsys):
    o = parse(["--image-size", "32"], only=("image_size", "device"))
    assert o.image_size == 32 and o.batch_size == 64
    with pytest.raises(SystemExit):
        parse(["--batch-size", "8"], only=("image_size",))
    with pytest.raises(ValueError, match="colour"):
        parse([], only=("colour",))


@pytest.mark.parametrize("argv,flag", [(["--batch-size", "0"], "--batch-size"), (["--image-size", "-1"], "--image-size"),
                                       (["--num-workers", "-1"], "--num-workers"),
                                       (["--std", "1", "0", "1"], "--std")])
def test_bad_values_name_the_flag(argv, flag):
    with pytest.raises(ConfigError, match=flag):
        parse(argv)


def test_overrides_apply_on_the_model_preprocess_and_are_announced(capsys):
    model = create_model("vit_tiny", img_size=32, patch_size=8, depth=1)
    assert InferenceOptions().preprocess_for(model) == Preprocess()  # no record: the defaults
    model.preprocess = Preprocess(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), grayscale=True,
                                  source="recorded in m.json")
    p = InferenceOptions(image_size=48).preprocess_for(model, announce="embed")
    assert p == Preprocess(image_size=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), grayscale=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embed: image size 48 px") and "recorded in m.json" in err[0]
