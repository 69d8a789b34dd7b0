"""The Examples blocks of dinolab.text's docstrings run as written."""

import doctest
import importlib

import pytest
import torch

MODULES = ["tokenizer", "text_encoder", "vision_head", "clip_loss", "aligned", "pairs", "align", "zeroshot", "search"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"dinolab.text.{name}")
    result = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
